// Package localaddr finds the address a process should listen on so that
// a given peer can reach it back.
package localaddr

import "net"

// For returns the IP of this host's interface that traffic to remote
// (host:port) leaves from: the address a server must listen on for remote,
// and the hosts remote reaches, to call back. A peer on loopback gives
// 127.0.0.1; a peer on another host (or a netns host on a bridge) gives
// this host's address on the route to it. Connecting a UDP socket sends
// nothing; it only asks the kernel for the route. When remote has no
// route, or no host, it returns remote's own host, or 127.0.0.1.
func For(remote string) string {
	host, _, _ := net.SplitHostPort(remote)
	if host == "" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "127.0.0.1"
	}
	c, err := net.Dial("udp", remote)
	if err != nil {
		return host
	}
	defer c.Close()
	local, _, err := net.SplitHostPort(c.LocalAddr().String())
	if err != nil {
		return host
	}
	return local
}
