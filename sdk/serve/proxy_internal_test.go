package serve

import (
	"testing"

	"github.com/manta-ray/manta/controlplane/head"
)

// The controller creates proxies by the class name this package registers.
func TestProxyClassName(t *testing.T) {
	if proxyClass != head.ServeProxyClass {
		t.Fatalf("sdk/serve registers %q, the controller creates %q", proxyClass, head.ServeProxyClass)
	}
}
