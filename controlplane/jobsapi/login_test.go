package jobsapi_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/testcluster"
)

// TestLoginCookie: a browser is sent to /login, a wrong token is refused,
// the right one gives an HttpOnly SameSite=Strict cookie that opens the API
// (but not for cross-site writes); public prefixes pass without a token
// and Bearer keeps working.
func TestLoginCookie(t *testing.T) {
	tc := testcluster.Start(t, 1, nil)
	tc.WaitLeader()
	cl, err := cpclient.New(cpclient.Config{Addresses: tc.Addresses(), Token: tc.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	api, err := jobsapi.New(jobsapi.Config{Addr: "127.0.0.1:0", Client: cl, Token: tc.Token,
		Public: []string{"/static/"},
		Mount: []func(*http.ServeMux){func(mux *http.ServeMux) {
			mux.HandleFunc("GET /static/app.css", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "css") })
			mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "overview") })
		}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	base := "http://" + api.Address()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path string, body string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// A browser without a session goes to the form; an API client gets 401.
	resp, _ := send("GET", "/", "", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2F" {
		t.Fatalf("page without a session: %d %q; want 303 to /login?next=%%2F", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := send("GET", "/api/jobs/", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("api without a token: %d; want 401", resp.StatusCode)
	}
	if resp, body := send("GET", "/login?next=/jobs", "", nil); resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `value="/jobs"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	if resp, body := send("GET", "/static/app.css", "", nil); resp.StatusCode != 200 || body != "css" {
		t.Fatalf("public asset without a token: %d %q", resp.StatusCode, body)
	}

	form := func(token, next string) string { return url.Values{"token": {token}, "next": {next}}.Encode() }
	formHdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	resp, body := send("POST", "/login", form("wrong", "/"), formHdr)
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "not the cluster token") {
		t.Fatalf("wrong token: %d cookies %v %s", resp.StatusCode, resp.Cookies(), body)
	}
	// next is kept on this server.
	resp, _ = send("POST", "/login", form(tc.Token(), "//evil.example/x"), formHdr)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login with an off-site next: %d %q; want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == jobsapi.CookieName {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" {
		t.Fatalf("session cookie %+v; want HttpOnly, SameSite=Strict, Path=/", session)
	}
	if strings.Contains(session.Value, tc.Token()) {
		t.Fatal("the cookie holds the cluster token itself")
	}
	cookie := map[string]string{"Cookie": session.Name + "=" + session.Value}
	if resp, body := send("GET", "/", "", cookie); resp.StatusCode != 200 || body != "overview" {
		t.Fatalf("page with the session: %d %q", resp.StatusCode, body)
	}
	if resp, _ := send("GET", "/api/jobs/", "", cookie); resp.StatusCode != 200 {
		t.Fatalf("api with the session: %d", resp.StatusCode)
	}
	// A forged cookie is no session.
	if resp, _ := send("GET", "/api/jobs/", "", map[string]string{"Cookie": jobsapi.CookieName + "=" + tc.Token()}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the raw token as the cookie: %d; want 401", resp.StatusCode)
	}
	// A write from another site with the cookie is refused, whatever it is.
	crossSite := map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example", "Content-Type": "application/json"}
	if resp, _ := send("POST", "/api/jobs/", `{"entrypoint":"true"}`, crossSite); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site write with the cookie: %d; want 403", resp.StatusCode)
	}
	jobs, err := cl.ListSubmissions(t.Context(), false)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("the cross-site write created jobs: %v %v", jobs, err)
	}
	// Bearer, as Ray's clients send it, still works; a wrong one does not.
	if resp, _ := send("GET", "/api/version", "", map[string]string{"Authorization": "Bearer " + tc.Token()}); resp.StatusCode != 200 {
		t.Fatalf("bearer: %d", resp.StatusCode)
	}
	if resp, _ := send("GET", "/api/version", "", map[string]string{"Authorization": "Bearer nope", "Cookie": cookie["Cookie"]}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong bearer with a good cookie: %d; want 401", resp.StatusCode)
	}
	// Logging out ends the cookie.
	resp, _ = send("POST", "/logout", "", cookie)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %v", resp.StatusCode, resp.Cookies())
	}
}
