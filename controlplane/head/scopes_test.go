package head

import (
	"testing"

	"google.golang.org/grpc"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestEveryRPCHasAScope fails when an RPC is added without declaring what
// token scope it needs (it would be refused to everyone).
func TestEveryRPCHasAScope(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{pb.ControlPlane_ServiceDesc, pb.HeadService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if _, ok := methodScopes[full]; !ok {
				t.Errorf("%s has no scope in methodScopes", full)
			}
		}
	}
}

func TestScopedTokenShape(t *testing.T) {
	if _, ok := scopedTokenID("mt1_0123456789ab_" + string(make([]byte, 64))); ok {
		t.Error("non-hex secret accepted")
	}
	if id, ok := scopedTokenID("mt1_0123456789ab_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"); !ok || id != "0123456789ab" {
		t.Errorf("good token refused: %q %v", id, ok)
	}
	if _, ok := scopedTokenID("mt1_short_00"); ok {
		t.Error("short token accepted")
	}
}
