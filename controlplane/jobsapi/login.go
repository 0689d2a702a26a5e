package jobsapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/manta-ray/manta/internal/auth"
)

// CookieName is the cookie a browser holds after logging in.
const CookieName = "manta_session"

// sessionValue is what the login cookie holds: a MAC of a fixed label
// under the cluster token, not the token itself, so a leaked cookie does
// not open the gRPC ports; a new token ends every session.
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("manta dashboard session v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// cookieOK says whether the request carries a valid login cookie.
func cookieOK(r *http.Request, token string) bool {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(c.Value), []byte(sessionValue(token)))
}

// cookieScope is what the login cookie allows: admin for a session of the
// cluster token; a scoped token's session is the token itself (HttpOnly,
// SameSite=Strict, Secure over TLS), checked on every request so that a
// revocation ends it.
func (s *Server) cookieScope(r *http.Request, cluster string) (auth.Scope, bool) {
	if cookieOK(r, cluster) {
		return auth.ScopeAdmin, true
	}
	c, err := r.Cookie(CookieName)
	if err != nil || !strings.HasPrefix(c.Value, auth.ScopedTokenPrefix) {
		return 0, false
	}
	return s.scopeOf(c.Value, cluster)
}

// sameOrigin refuses cookie-authenticated writes sent by another site.
// SameSite=Strict already keeps the cookie off those; this is the second
// lock, from the headers browsers set on every such request.
func sameOrigin(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

// wantsPage says whether an unauthenticated request is a browser asking
// for a page (sent to /login) rather than an API client (answered 401).
func wantsPage(r *http.Request) bool {
	return r.Method == http.MethodGet && r.Header.Get("Authorization") == "" &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// safeNext keeps the redirect after login on this server: a local path,
// never another host ("//evil", "/\evil", "https://...").
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, `/\`) {
		return "/"
	}
	return next
}

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>manta · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;background:#f4f6f8;color:#1d2630;display:flex;justify-content:center;padding-top:12vh;margin:0}
form{background:#fff;border:1px solid #d5dbe1;border-radius:8px;padding:28px 32px;width:340px;box-shadow:0 2px 8px #0001}
h1{font-size:20px;margin:0 0 4px}p{color:#5b6773;margin:0 0 18px;font-size:13px}
label{display:block;font-weight:600;margin-bottom:6px}
input[type=password]{width:100%;box-sizing:border-box;padding:8px;border:1px solid #b8c2cc;border-radius:4px;font:inherit}
button{margin-top:14px;width:100%;padding:9px;border:0;border-radius:4px;background:#1f6feb;color:#fff;font-weight:600;font:inherit;cursor:pointer}
.err{color:#b42318;background:#fef3f2;border:1px solid #fecdca;padding:8px;border-radius:4px;margin-bottom:14px;font-size:13px}
</style></head>
<body><form method="post" action="/login" id="login">
<h1>manta dashboard</h1>
<p>Log in with the cluster token: the file <code>token</code> in a head's data dir, or the token the heads were started with.</p>
{{if .Error}}<div class="err" id="login-error">{{.Error}}</div>{{end}}
<label for="token">Cluster token</label>
<input type="password" id="token" name="token" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{{.Next}}">
<button type="submit" id="login-submit">Log in</button>
</form></body></html>
`))

type loginData struct{ Error, Next string }

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) renderLogin(w http.ResponseWriter, code int, d loginData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// No script at all, and no framing (a framed login form invites
	// clickjacking).
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(code)
	_ = loginTmpl.Execute(w, d)
}

// login checks the token typed into the form and, when right, sets the
// session cookie and goes back to the page that asked for it.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		httpError(w, http.StatusBadRequest, "the login form could not be read: "+err.Error())
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !sameOrigin(r) {
		httpError(w, http.StatusForbidden, "a cross-site login is refused")
		return
	}
	want := s.cfg.Token()
	given := strings.TrimSpace(r.PostForm.Get("token"))
	if _, ok := s.scopeOf(given, want); !ok {
		s.log.Info("dashboard login refused: wrong token", zapRemote(r))
		s.renderLogin(w, http.StatusUnauthorized, loginData{Error: "That is not the cluster token or a live scoped token.", Next: next})
		return
	}
	session := given
	if tokenEqual(given, want) {
		session = sessionValue(want)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: session, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
