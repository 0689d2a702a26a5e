// Package cpclient is the control plane's client, used by raylets, the SDK
// and the CLI: it holds a list of heads, goes to the leader when it knows
// it, rotates and retries with jittered backoff on Unavailable, and gives
// every write a request ID that stays the same across its retries, so a
// write retried across a failover is applied once.
package cpclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Environment variables the CLI, raylets and drivers read.
const (
	EnvAddress   = "MANTA_ADDRESS"
	EnvToken     = "MANTA_TOKEN"
	EnvTokenFile = "MANTA_TOKEN_FILE"
)

// ErrNoAddress is returned by New without any head address.
var ErrNoAddress = errors.New("no head address: pass --address or set " + EnvAddress)

// Config configures a Client. Zero durations take their defaults.
type Config struct {
	// Addresses are heads' gRPC addresses; any subset of the cluster works.
	Addresses []string
	// Token is the cluster token.
	Token string
	// Timeout bounds one call with all its retries; default 10s. A context
	// deadline that comes sooner wins.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt on one head, so a paused head
	// does not hold a call; default 2s.
	AttemptTimeout time.Duration
	// DialOptions are added to every connection.
	DialOptions []grpc.DialOption
	// TLS, when set, makes every connection mutual TLS, accepting only
	// heads with a certificate from the cluster CA.
	TLS    *tlsconfig.Source
	Logger *zap.Logger
}

// Client talks to a cluster's heads. It is safe for concurrent use.
type Client struct {
	cfg Config
	log *zap.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	addrs []string // the rotation, shuffled once
	cur   int      // index into addrs of the head to try first

	kv kvCoalescer // concurrent KVPuts, sent in batches (kvbatch.go)
}

// New returns a client; it dials lazily.
func New(cfg Config) (*Client, error) {
	var addrs []string
	seen := map[string]bool{}
	for _, a := range cfg.Addresses {
		for _, p := range strings.Split(a, ",") {
			if p = strings.TrimSpace(p); p != "" && !seen[p] {
				seen[p] = true
				addrs = append(addrs, p)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, ErrNoAddress
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return &Client{cfg: cfg, log: cfg.Logger.Named("cpclient"), conns: map[string]*grpc.ClientConn{}, addrs: addrs}, nil
}

// TokenFromEnv returns the token from MANTA_TOKEN or the file named by
// MANTA_TOKEN_FILE, or "".
func TokenFromEnv() (string, error) {
	if t := os.Getenv(EnvToken); t != "" {
		return strings.TrimSpace(t), nil
	}
	if f := os.Getenv(EnvTokenFile); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvTokenFile, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// TLS is the client's TLS source (nil: plain text), for connections to
// raylets and owners made beside this client.
func (c *Client) TLS() *tlsconfig.Source { return c.cfg.TLS }

// Addresses returns the heads this client rotates over.
func (c *Client) Addresses() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.addrs...)
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
	return nil
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	tok := c.cfg.Token
	opts := append([]grpc.DialOption{
		c.cfg.TLS.DialOption(tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tok })),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// tlsHint explains the error a plaintext client gets from a TLS head (the
// server drops the connection before gRPC's preface).
func (c *Client) tlsHint(err error) string {
	if c.cfg.TLS == nil && err != nil && strings.Contains(err.Error(), "server preface") {
		return " (if the cluster runs TLS, pass --tls-ca, --tls-cert and --tls-key or set " +
			tlsconfig.EnvCA + ", " + tlsconfig.EnvCert + " and " + tlsconfig.EnvKey + ")"
	}
	return ""
}

// current returns the head to try now.
func (c *Client) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[c.cur]
}

// rotate moves past addr, unless another caller already did.
func (c *Client) rotate(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[c.cur] == addr {
		c.cur = (c.cur + 1) % len(c.addrs)
	}
}

// preferLeader points the rotation at the leader a reply named, when that
// head is in the client's list (a client given one head stays on it).
func (c *Client) preferLeader(h *pb.Header) {
	if h == nil || h.LeaderAddress == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[c.cur] == h.LeaderAddress {
		return
	}
	for i, a := range c.addrs {
		if a == h.LeaderAddress {
			c.cur = i
			return
		}
	}
}

// retryable says whether another attempt (on another head) may succeed.
func retryable(err error, ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	switch rpcerr.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

type headered interface{ GetHeader() *pb.Header }

// call runs fn against heads until it succeeds, fails for good, or the
// call's time is up. Errors come back mapped to their sentinels.
func call[Resp any](ctx context.Context, c *Client, fn func(ctx context.Context, cl pb.ControlPlaneClient) (Resp, error)) (Resp, error) {
	return callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (Resp, error) {
		return fn(ctx, pb.NewControlPlaneClient(cc))
	})
}

// callConn is call for any service the heads serve.
func callConn[Resp any](ctx context.Context, c *Client, fn func(ctx context.Context, cc grpc.ClientConnInterface) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var lastErr error
	backoff := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		addr := c.current()
		cc, err := c.conn(addr)
		if err == nil {
			actx, acancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
			var resp Resp
			resp, err = fn(actx, cc)
			acancel()
			if err == nil {
				if h, ok := any(resp).(headered); ok {
					c.preferLeader(h.GetHeader())
				}
				return resp, nil
			}
			err = rpcerr.FromStatus(err)
		}
		lastErr = err
		if !retryable(err, ctx) {
			var zero Resp
			if ctx.Err() != nil && lastErr != nil {
				return zero, fmt.Errorf("%w (after %d attempts; last: %v)", rpcerr.ErrDeadlineExceeded, attempt+1, lastErr)
			}
			return zero, err
		}
		c.rotate(addr)
		sleep := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		c.log.Debug("retrying", zap.String("head", addr), zap.Int("attempt", attempt), zap.Duration("sleep", sleep), zap.Error(err))
		select {
		case <-ctx.Done():
			var zero Resp
			return zero, fmt.Errorf("%w: gave up after %d attempts; last error: %v%s", ErrUnavailable, attempt+1, lastErr, c.tlsHint(lastErr))
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

// ErrUnavailable is returned when no head answered within the call's time.
var ErrUnavailable = rpcerr.New(codes.Unavailable, "CLUSTER_UNAVAILABLE", "no head of the cluster could serve the call")

// RequestID returns a fresh write request ID.
func RequestID() string { return auth.RandomHex(16) }
