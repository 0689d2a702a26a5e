package head

import (
	"math"
	"unicode/utf8"

	"github.com/manta-ray/manta/internal/rpcerr"
)

const (
	maxIDLen  = 128
	maxKeyLen = 4096
	// maxResourceNames bounds the resource names of one node (registration
	// or heartbeat): a node map of thousands is a bug or an attack, and the
	// leader keeps every heartbeat's map.
	maxResourceNames = 1024
)

func checkID(what, id string) error {
	switch {
	case id == "":
		return rpcerr.Wrapf(ErrBadRequest, "%s is required", what)
	case len(id) > maxIDLen:
		return rpcerr.Wrapf(ErrBadRequest, "%s is %d bytes; at most %d", what, len(id), maxIDLen)
	case !utf8.ValidString(id):
		return rpcerr.Wrapf(ErrBadRequest, "%s is not valid UTF-8", what)
	}
	return nil
}

func checkRequestID(id string) error {
	if len(id) > maxIDLen {
		return rpcerr.Wrapf(ErrBadRequest, "request_id is %d bytes; at most %d", len(id), maxIDLen)
	}
	return nil
}

// checkResources refuses negative, NaN or infinite quantities and empty names.
func checkResources(what string, r map[string]float64) error {
	if len(r) > maxResourceNames {
		return rpcerr.Wrapf(ErrBadRequest, "%s: %d resource names; at most %d", what, len(r), maxResourceNames)
	}
	for name, q := range r {
		if name == "" || len(name) > maxIDLen {
			return rpcerr.Wrapf(ErrBadRequest, "%s: resource name %q is empty or too long", what, name)
		}
		if q < 0 || math.IsNaN(q) || math.IsInf(q, 0) {
			return rpcerr.Wrapf(ErrBadRequest, "%s: resource %q has quantity %v; want a finite number >= 0", what, name, q)
		}
	}
	return nil
}

func (h *Head) checkKey(ns, key string) error {
	if len(ns) > maxIDLen || !utf8.ValidString(ns) {
		return rpcerr.Wrapf(ErrBadRequest, "namespace must be valid UTF-8 of at most %d bytes", maxIDLen)
	}
	if key == "" {
		return rpcerr.Wrapf(ErrBadRequest, "key is required")
	}
	if len(key) > maxKeyLen {
		return rpcerr.Wrapf(ErrBadRequest, "key is %d bytes; at most %d", len(key), maxKeyLen)
	}
	return nil
}
