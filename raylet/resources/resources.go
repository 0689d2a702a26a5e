// Package resources is the arithmetic of resource sets: a map from a
// resource's name ("CPU", "GPU", "memory", or a custom one) to a quantity.
package resources

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// Names of the built-in resources.
const (
	CPU    = "CPU"
	GPU    = "GPU"
	Memory = "memory"
)

// ErrInvalid is a negative, NaN or malformed resource request.
var ErrInvalid = rpcerr.New(codes.InvalidArgument, "INVALID_RESOURCES", "invalid resource request")

// epsilon absorbs float rounding in comparisons.
const epsilon = 1e-9

// Set is a resource set. A missing name means 0.
type Set map[string]float64

// Validate refuses negative, NaN, infinite quantities and empty names.
func Validate(s map[string]float64) error {
	for k, v := range s {
		if k == "" || strings.ContainsAny(k, " ,=") {
			return fmt.Errorf("%w: bad resource name %q", ErrInvalid, k)
		}
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s=%v", ErrInvalid, k, v)
		}
	}
	return nil
}

// Parse reads "name=qty,name=qty".
func Parse(s string) (Set, error) {
	out := Set{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not name=quantity", ErrInvalid, part)
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrInvalid, part, err)
		}
		out[strings.TrimSpace(k)] = q
	}
	return out, Validate(out)
}

// Clone copies s.
func (s Set) Clone() Set {
	out := make(Set, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

// Fits says whether req fits in s.
func (s Set) Fits(req Set) bool {
	for k, v := range req {
		if v > 0 && s[k]+epsilon < v {
			return false
		}
	}
	return true
}

// Sub takes req out of s (it may go negative: a blocked worker's CPU is
// taken back even when lent out).
func (s Set) Sub(req Set) {
	for k, v := range req {
		s[k] = Round(s[k] - v)
	}
}

// Add puts req back into s.
func (s Set) Add(req Set) {
	for k, v := range req {
		s[k] = Round(s[k] + v)
	}
}

// Round drops the binary rounding error of an amount (to 1e-9, far below
// any quantity asked): fractional amounts taken and given back many times
// (bundles of 0.1 CPU) left 1.9999999999999998 of 2 CPUs free, which is
// not all of them.
func Round(x float64) float64 { return math.Round(x*1e9) / 1e9 }

// Utilization is the largest used fraction over the resources of total
// that req asks for (CPU when req is empty).
func Utilization(total, avail, req Set) float64 {
	u := 0.0
	consider := func(k string) {
		if t := total[k]; t > 0 {
			u = max(u, 1-avail[k]/t)
		}
	}
	if len(req) == 0 {
		consider(CPU)
	}
	for k, v := range req {
		if v > 0 {
			consider(k)
		}
	}
	return u
}

// Key is a stable string form ("CPU=1,GPU=0.5"), used as a scheduling key.
func (s Set) Key() string {
	keys := make([]string, 0, len(s))
	for k, v := range s {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(s[k], 'g', -1, 64))
	}
	return b.String()
}
