package tlsconfig

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// BenchmarkStream is the raw cost of the cluster's TLS on one loopback
// stream (bytes/s with -bench; compare the plain subbenchmark).
func BenchmarkStream(b *testing.B) {
	p := newPKI(b)
	srv := p.source(b, RoleNode, "a")
	cli := p.source(b, RoleNode, "b")
	for _, mode := range []string{"plain", "tls"} {
		b.Run(mode, func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer lis.Close()
			go func() {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				if mode == "tls" {
					c = tls.Server(c, srv.ServerConfig())
				}
				io.Copy(io.Discard, c)
				c.Close()
			}()
			var c net.Conn
			if mode == "tls" {
				c, err = tls.Dial("tcp", lis.Addr().String(), cli.ClientConfig())
			} else {
				c, err = net.Dial("tcp", lis.Addr().String())
			}
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
