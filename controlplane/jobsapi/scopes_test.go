package jobsapi_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestRESTScopes: a read token lists jobs and logs in to the dashboard but
// cannot submit (403); a submit token can; a revoked token is refused.
func TestRESTScopes(t *testing.T) {
	tc := testcluster.Start(t, 1, nil)
	tc.WaitLeader()
	cl, err := cpclient.New(cpclient.Config{Addresses: tc.Addresses(), Token: tc.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	api, err := jobsapi.New(jobsapi.Config{Addr: "127.0.0.1:0", Client: cl, Token: tc.Token, Scope: tc.Heads[0].ScopeOf,
		Mount: []func(*http.ServeMux){func(mux *http.ServeMux) {
			mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "overview") })
		}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	ctx := testcluster.Ctx(t, 30*time.Second)
	read, err := cl.CreateToken(ctx, &pb.CreateTokenRequest{Scope: "read"})
	if err != nil {
		t.Fatal(err)
	}
	submit, err := cl.CreateToken(ctx, &pb.CreateTokenRequest{Scope: "submit"})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + api.Address()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path, token, body string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	job := `{"entrypoint":"true"}`
	if r := send("GET", "/api/jobs/", read.Token, "", nil); r.StatusCode != 200 {
		t.Fatalf("read token GET: %d", r.StatusCode)
	}
	if r := send("POST", "/api/jobs/", read.Token, job, nil); r.StatusCode != http.StatusForbidden {
		t.Fatalf("read token POST: %d; want 403", r.StatusCode)
	}
	if r := send("POST", "/api/jobs/", submit.Token, job, nil); r.StatusCode != 200 {
		t.Fatalf("submit token POST: %d", r.StatusCode)
	}
	// The dashboard: a read token logs in and sees pages.
	form := url.Values{"token": {read.Token}, "next": {"/"}}.Encode()
	r := send("POST", "/login", "", form, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("login with a read token: %d %v", r.StatusCode, r.Cookies())
	}
	cookie := r.Cookies()[0]
	page := func() int {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.AddCookie(cookie)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := page(); got != 200 {
		t.Fatalf("page with a read session: %d", got)
	}
	if _, err := cl.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: read.Info.Id}); err != nil {
		t.Fatal(err)
	}
	if r := send("GET", "/api/jobs/", read.Token, "", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token GET: %d; want 401", r.StatusCode)
	}
	if got := page(); got == 200 {
		t.Fatal("a revoked token's session still works")
	}
}
