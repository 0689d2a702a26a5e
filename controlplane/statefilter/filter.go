// Package statefilter is the filter language of the State API, shared by
// the leader's task listing and the client-side listings of the other
// kinds: k=v and k!=v conditions on a listing's columns, checked against a
// schema so an unknown column or a value of the wrong type is refused with
// InvalidArgument naming the column. String comparisons ignore case, as
// Ray's do.
package statefilter

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ErrBadFilter is a filter naming an unknown column, with an unknown
// predicate, or with a value that is not of its column's type.
var ErrBadFilter = rpcerr.New(codes.InvalidArgument, "BAD_FILTER", "invalid filter")

// Kind is a column's value type.
type Kind uint8

const (
	String Kind = iota
	Int
	Float
	Bool
)

func (k Kind) String() string {
	return [...]string{"string", "integer", "number", "boolean"}[k]
}

// Schema names the columns a kind can be filtered on.
type Schema map[string]Kind

// Keys are the schema's columns, sorted.
func (s Schema) Keys() []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Parse reads "key=value" or "key!=value".
func Parse(s string) (*pb.StateFilter, error) {
	if i := strings.Index(s, "!="); i > 0 {
		return &pb.StateFilter{Key: strings.TrimSpace(s[:i]), Predicate: "!=", Value: strings.TrimSpace(s[i+2:])}, nil
	}
	if i := strings.Index(s, "="); i > 0 {
		return &pb.StateFilter{Key: strings.TrimSpace(s[:i]), Predicate: "=", Value: strings.TrimSpace(s[i+1:])}, nil
	}
	return nil, rpcerr.Wrapf(ErrBadFilter, "%q: want key=value or key!=value", s)
}

// ParseAll parses every filter.
func ParseAll(ss []string) ([]*pb.StateFilter, error) {
	out := make([]*pb.StateFilter, 0, len(ss))
	for _, s := range ss {
		f, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// Check refuses filters the schema cannot answer; the error names the
// column.
func (s Schema) Check(fs []*pb.StateFilter) error {
	for _, f := range fs {
		k, ok := s[f.Key]
		if !ok {
			return rpcerr.Wrapf(ErrBadFilter, "unknown field %q (fields: %s)", f.Key, strings.Join(s.Keys(), ", "))
		}
		if f.Predicate != "=" && f.Predicate != "!=" {
			return rpcerr.Wrapf(ErrBadFilter, "field %q: predicate %q is not = or !=", f.Key, f.Predicate)
		}
		if _, err := convert(k, f.Value); err != nil {
			return rpcerr.Wrapf(ErrBadFilter, "field %q: %q is not a %s", f.Key, f.Value, k)
		}
	}
	return nil
}

func convert(k Kind, v string) (any, error) {
	switch k {
	case Int:
		return strconv.ParseInt(v, 10, 64)
	case Float:
		return strconv.ParseFloat(v, 64)
	case Bool:
		return strconv.ParseBool(strings.ToLower(v))
	}
	return v, nil
}

// Match says whether a row passes every filter; get returns a column's
// value (string, an integer type, float64 or bool). Filters must have
// passed Check.
func (s Schema) Match(fs []*pb.StateFilter, get func(key string) any) bool {
	for _, f := range fs {
		want, _ := convert(s[f.Key], f.Value)
		eq := equal(get(f.Key), want)
		if eq != (f.Predicate == "=") {
			return false
		}
	}
	return true
}

func equal(have, want any) bool {
	switch w := want.(type) {
	case string:
		return strings.EqualFold(fmt.Sprint(have), w)
	case int64:
		switch h := have.(type) {
		case int:
			return int64(h) == w
		case int32:
			return int64(h) == w
		case int64:
			return h == w
		case uint64:
			return w >= 0 && h == uint64(w)
		case float64:
			return h == float64(w)
		}
	case float64:
		switch h := have.(type) {
		case float64:
			return h == w
		case int64:
			return float64(h) == w
		case int32:
			return float64(h) == w
		case int:
			return float64(h) == w
		}
	case bool:
		h, ok := have.(bool)
		return ok && h == w
	}
	return false
}
