// Package durable names the control-store entries of Durable Puts, shared
// by the SDK that writes them and the control plane that answers for them
// once their owner died and drops them when their job ends.
package durable

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/manta-ray/manta/internal/ids"
)

// Namespace is the control-store namespace of durable values.
const Namespace = "manta.durable"

// Key is the entry of object id's value in format f, put by job: the
// object first, so its entries are found by Prefix without knowing the
// rest.
func Key(id ids.ObjectID, f int32, job string) string {
	return fmt.Sprintf("%s/%d/%s", id, f, job)
}

// Prefix is what every entry of object id starts with.
func Prefix(id ids.ObjectID) string { return id.String() + "/" }

// Parse splits an entry's key into its format and job; ok is false for a
// key that is not one.
func Parse(key string) (f int32, job string, ok bool) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return 0, "", false
	}
	n, err := strconv.ParseInt(parts[1], 10, 32)
	if err != nil {
		return 0, "", false
	}
	return int32(n), parts[2], true
}
