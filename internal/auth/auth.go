// Package auth carries the cluster token on gRPC calls. Every manta RPC but
// the head handshake needs it; see controlplane/head's interceptors.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

const header = "authorization"

// Token returns per-RPC credentials that send the token get returns at call
// time, so a connection made before the token was known still works later.
func Token(get func() string) credentials.PerRPCCredentials { return tokenCreds(get) }

type tokenCreds func() string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok := t()
	if tok == "" {
		return nil, nil
	}
	return map[string]string{header: "Bearer " + tok}, nil
}

// RequireTransportSecurity is false until TLS lands; the token then rides
// inside TLS without change here.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// FromIncoming returns the bearer token of an incoming call, or "".
func FromIncoming(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(header) {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return t
		}
	}
	return ""
}

// Equal compares tokens in constant time.
func Equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// NewToken returns a fresh random token (256 bits, hex).
func NewToken() string { return RandomHex(32) }

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
