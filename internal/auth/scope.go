package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Scope is what a token may do. Scopes are ordered: each allows what the
// ones below it do.
type Scope uint8

const (
	ScopeNone   Scope = iota // no token needed (the head handshake)
	ScopeRead                // status, state, dashboard, metrics
	ScopeSubmit              // jobs and drivers: runs code on the cluster
	ScopeAdmin               // operators, tokens, and the cluster's own processes
)

var scopeNames = [...]string{ScopeNone: "none", ScopeRead: "read", ScopeSubmit: "submit", ScopeAdmin: "admin"}

func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

// ParseScope reads "read", "submit" or "admin".
func ParseScope(s string) (Scope, error) {
	for i, n := range scopeNames {
		if n == s && Scope(i) != ScopeNone {
			return Scope(i), nil
		}
	}
	return 0, fmt.Errorf("scope %q: want read, submit or admin", s)
}

// Allows says whether a token of scope s may make a call that needs need.
func (s Scope) Allows(need Scope) bool { return s >= need }

// Hash is how a scoped token is stored and looked up: hex SHA-256. The
// tokens are 256-bit random, so a plain hash is as strong as a slow one.
func Hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// ScopedTokenPrefix starts every scoped token, so logs and scanners can
// tell them from the cluster token.
const ScopedTokenPrefix = "mt1_"

// NewScopedToken returns a fresh scoped token whose ID (the part before
// the second underscore) names it in listings without revealing it.
func NewScopedToken() (id, token string) {
	id = RandomHex(6)
	return id, ScopedTokenPrefix + id + "_" + RandomHex(32)
}
