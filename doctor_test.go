package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/feishu/feishutest"
	"issuebot/guance/guancetest"
	"issuebot/store"
	"issuebot/store/storetest"
)

// Secrets the doctor tests configure besides the fakes' own; none may be printed.
const (
	doctorEncryptKey = "encrypt-key-SECRET-4242"
	doctorVerifyTok  = "verify-token-SECRET-4343"
	doctorChat       = "oc_doctor"
)

// doctorRig is the fakes and a valid environment pointing at them, with the embedded
// store in a directory of its own.
type doctorRig struct {
	fs      *feishutest.Server
	gs      *guancetest.Server
	dataDir string
	env     []string
	secrets []string
}

func newDoctorRig(t *testing.T) *doctorRig {
	t.Helper()
	r := &doctorRig{fs: feishutest.NewServer(t), gs: guancetest.NewServer(t), dataDir: t.TempDir()}
	r.fs.AddChat(doctorChat)
	r.env = []string{
		"FEISHU_APP_ID=" + r.fs.AppID, "FEISHU_APP_SECRET=" + r.fs.AppSecret, "FEISHU_BASE_URL=" + r.fs.URL,
		"FEISHU_CHAT_ID=" + doctorChat,
		"FEISHU_ENCRYPT_KEY=" + doctorEncryptKey, "FEISHU_VERIFICATION_TOKEN=" + doctorVerifyTok,
		"GUANCE_API_KEY=" + r.gs.APIKey, "GUANCE_BASE_URL=" + r.gs.URL,
		"DATA_DIR=" + r.dataDir, "HTTP_ADDR=127.0.0.1:0", "INSTANCE_ID=doctor-test",
	}
	r.secrets = []string{r.fs.AppSecret, r.gs.APIKey, doctorEncryptKey, doctorVerifyTok}
	return r
}

// run runs doctor with the rig's environment plus extra (later entries win) and
// returns its output and exit code. Any value in extra that contains "SECRET" is a
// secret too.
func (r *doctorRig) run(t *testing.T, extra ...string) (string, int) {
	t.Helper()
	for _, kv := range extra {
		if _, v, _ := strings.Cut(kv, "="); strings.Contains(v, "SECRET") {
			r.secrets = append(r.secrets, v)
		}
	}
	var out bytes.Buffer
	code := doctor(t.Context(), append(append([]string(nil), r.env...), extra...), &out)
	t.Logf("doctor output (exit %d):\n%s", code, out.String())
	return out.String(), code
}

// check asserts the exit code, that no secret was printed, that Guance saw at most 3
// requests, and that for each of wantFail some ✗ line contains all of its parts.
func (r *doctorRig) check(t *testing.T, out string, code, wantCode int, wantFail ...[]string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("doctor exit code = %d, want %d", code, wantCode)
	}
	for _, s := range r.secrets {
		if strings.Contains(out, s) {
			t.Errorf("doctor output leaks the secret %.6s…", s)
		}
	}
	if n := len(r.gs.Requests()); n > 3 {
		t.Errorf("doctor spent %d Guance requests, want at most 3", n)
	}
	var fails []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		switch {
		case strings.HasPrefix(line, "✗ "):
			fails = append(fails, line)
		case strings.HasPrefix(line, "✓ "):
		default:
			t.Errorf("line %q starts with neither ✓ nor ✗", line)
		}
	}
	if wantCode == 0 && len(fails) > 0 {
		t.Errorf("doctor printed failures: %q", fails)
	}
	for _, parts := range wantFail {
		if !slicesAny(fails, func(l string) bool { return containsAll(l, parts) }) {
			t.Errorf("no ✗ line contains all of %q; failures: %q", parts, fails)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func slicesAny(xs []string, f func(string) bool) bool {
	for _, x := range xs {
		if f(x) {
			return true
		}
	}
	return false
}

// putRoute stores a route in the rig's embedded store, as the bot would, and closes it.
func (r *doctorRig) putRoute(t *testing.T, chatID string) {
	t.Helper()
	st, err := store.Open(t.Context(), "", r.dataDir)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	if err := st.PutRoute(t.Context(), store.Route{ChatID: chatID, ChannelUUID: guancetest.DefaultChannelUUID}); err != nil {
		t.Fatalf("put route: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
}

func TestDoctorAllGreen(t *testing.T) {
	r := newDoctorRig(t)
	r.fs.AddChat("oc_routed")
	r.putRoute(t, "oc_routed")
	out, code := r.run(t)
	r.check(t, out, code, 0)
	for _, want := range []string{
		"✓ configuration", "✓ feishu app credentials", "✓ feishu bot ability", "✓ feishu event intake (long connection)",
		"✓ store: " + filepath.Join(r.dataDir, store.EmbeddedFile) + " opened and locked (1 route)",
		"✓ default chat " + doctorChat, "✓ routed chat oc_routed", "✓ guance api key",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := len(r.gs.Requests()); n != 1 {
		t.Errorf("doctor spent %d Guance requests, want 1", n)
	}
	if got := len(r.fs.Messages(doctorChat)) + len(r.fs.Messages("oc_routed")); got != 0 {
		t.Errorf("doctor posted %d messages, want none", got)
	}
}

// A DATA_DIR that does not exist yet passes and is left as it was: doctor creates no
// store file.
func TestDoctorFreshDataDirIsLeftAlone(t *testing.T) {
	r := newDoctorRig(t)
	dir := filepath.Join(r.dataDir, "not", "yet")
	out, code := r.run(t, "DATA_DIR="+dir, "FEISHU_CHAT_ID=")
	r.check(t, out, code, 0)
	for _, want := range []string{"will be created at the first start", "✓ default chat: FEISHU_CHAT_ID is not set: only routed chats get issues"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, "not")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("doctor created something under DATA_DIR's parent: %v", err)
	}
}

func TestDoctorBadGuanceKey(t *testing.T) {
	r := newDoctorRig(t)
	out, code := r.run(t, "GUANCE_API_KEY=wrong-key-SECRET-999")
	r.check(t, out, code, 1, []string{"✗ guance api key", "refused the key", "GUANCE_API_KEY"})
}

func TestDoctorGuanceThrottled(t *testing.T) {
	r := newDoctorRig(t)
	r.gs.ThrottleFor(time.Minute)
	out, code := r.run(t)
	r.check(t, out, code, 1, []string{"✗ guance api key", "throttled right now", "GUANCE_API_KEY"})
}

func TestDoctorGuanceUnreachable(t *testing.T) {
	r := newDoctorRig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	out, code := r.run(t, "GUANCE_BASE_URL="+closed)
	r.check(t, out, code, 1, []string{"✗ guance api key", "cannot reach", "GUANCE_BASE_URL"})
}

func TestDoctorBadFeishuSecret(t *testing.T) {
	r := newDoctorRig(t)
	out, code := r.run(t, "FEISHU_APP_SECRET=bad-app-SECRET-777")
	r.check(t, out, code, 1,
		[]string{"✗ feishu app credentials", "10014", "FEISHU_APP_SECRET"},
		[]string{"✗ feishu bot ability", "not checked"})
	if strings.Contains(out, "✓ default chat") {
		t.Error("the chat check passed without a tenant token")
	}
}

func TestDoctorDefaultChatWithoutBot(t *testing.T) {
	r := newDoctorRig(t)
	out, code := r.run(t, "FEISHU_CHAT_ID=oc_elsewhere")
	r.check(t, out, code, 1, []string{"✗ default chat oc_elsewhere", "not a member", "add the bot to the group", "FEISHU_CHAT_ID"})
}

func TestDoctorRoutedChatWithoutBot(t *testing.T) {
	r := newDoctorRig(t)
	r.putRoute(t, "oc_gone")
	out, code := r.run(t)
	r.check(t, out, code, 1, []string{"✗ routed chat oc_gone", "not a member", "add the bot to the group"})
	if !strings.Contains(out, "✓ default chat "+doctorChat) {
		t.Error("the default chat was not checked")
	}
}

func TestDoctorEmbeddedStoreLocked(t *testing.T) {
	r := newDoctorRig(t)
	st, err := store.Open(t.Context(), "", r.dataDir)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	start := time.Now()
	out, code := r.run(t)
	r.check(t, out, code, 1,
		[]string{"✗ store", "another issuebot holds", store.EmbeddedFile, "stop it or use another DATA_DIR"},
		[]string{"✗ routed chats", "not checked"})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("doctor took %v with the store locked", d)
	}
}

// The long-connection endpoint refuses while the REST API works: a proxy in front of
// the Feishu fake answers the endpoint itself.
func TestDoctorLongConnectionRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		ctype   string
		body    string
		wantVar string
	}{
		{"connection limit", http.StatusOK, "application/json", `{"code":1000040350,"msg":"exceed conn limit"}`, "FEISHU_APP_ID"},
		{"credentials", http.StatusOK, "application/json", `{"code":514,"msg":"auth failed"}`, "FEISHU_APP_SECRET"},
		{"not the open platform", http.StatusBadGateway, "text/html", `<html>bad gateway</html>`, "FEISHU_BASE_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDoctorRig(t)
			target, err := url.Parse(r.fs.URL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httputil.NewSingleHostReverseProxy(target)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.URL.Path == "/callback/ws/endpoint" { // larkws.GenEndpointUri
					_, _ = io.Copy(io.Discard, req.Body)
					w.Header().Set("Content-Type", tc.ctype)
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, tc.body)
					return
				}
				proxy.ServeHTTP(w, req)
			}))
			t.Cleanup(front.Close)
			out, code := r.run(t, "FEISHU_BASE_URL="+front.URL)
			r.check(t, out, code, 1, []string{"✗ feishu event intake (long connection)", tc.wantVar})
			if !strings.Contains(out, "✓ feishu app credentials") {
				t.Error("the credentials check did not pass through the proxy")
			}
		})
	}
}

func TestDoctorHTTPModeNeedsSecrets(t *testing.T) {
	r := newDoctorRig(t)
	out, code := r.run(t, "FEISHU_EVENT_MODE=http")
	r.check(t, out, code, 0)
	if !strings.Contains(out, "✓ feishu event intake (http)") {
		t.Error("no http intake line")
	}
	out, code = r.run(t, "FEISHU_EVENT_MODE=http", "FEISHU_ENCRYPT_KEY=")
	r.check(t, out, code, 1,
		[]string{"✗ configuration", "FEISHU_ENCRYPT_KEY"},
		[]string{"✗ feishu event intake (http)", "FEISHU_ENCRYPT_KEY"})
}

// Bad variables are each named, and the checks that do not need them still run.
func TestDoctorBadConfigKeepsChecking(t *testing.T) {
	r := newDoctorRig(t)
	out, code := r.run(t, "GUANCE_API_KEY=", "POLL_INTERVAL=often")
	r.check(t, out, code, 1,
		[]string{"✗ configuration", "GUANCE_API_KEY"},
		[]string{"✗ configuration", "POLL_INTERVAL"},
		[]string{"✗ guance api key", "not checked", "GUANCE_API_KEY"})
	for _, want := range []string{"✓ feishu app credentials", "✓ store", "✓ default chat"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := len(r.gs.Requests()); n != 0 {
		t.Errorf("doctor spent %d Guance requests without a key, want 0", n)
	}
}

func TestDoctorRedis(t *testing.T) {
	addr := storetest.RedisAddr(t)
	r := newDoctorRig(t)
	out, code := r.run(t, "REDIS_URL=redis://"+addr+"/9")
	r.check(t, out, code, 0)
	if !strings.Contains(out, "✓ store: Redis at "+addr) {
		t.Errorf("output lacks the Redis store line")
	}

	// A password the server does not expect: the line names the host and REDIS_URL,
	// never the password.
	out, code = r.run(t, "REDIS_URL=redis://doctor:pw-SECRET-5150@"+addr+"/9")
	r.check(t, out, code, 1, []string{"✗ store", addr, "REDIS_URL"})
}

// issuebot doctor, run as the real binary, exits with doctor's code.
func TestMainDoctorExitCode(t *testing.T) {
	r := newDoctorRig(t)
	for _, tc := range []struct {
		extra []string
		want  int
	}{
		{nil, 0},
		{[]string{"GUANCE_API_KEY=wrong-key-SECRET-888"}, 1},
	} {
		for _, kv := range tc.extra {
			_, v, _ := strings.Cut(kv, "=")
			r.secrets = append(r.secrets, v)
		}
		cmd := exec.Command(os.Args[0], "doctor")
		cmd.Env = append(append([]string{"ISSUEBOT_TEST_RUN_MAIN=1"}, r.env...), tc.extra...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run issuebot doctor: %v", err)
		}
		r.check(t, string(out), code, tc.want)
	}
}

func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()
	var stderr bytes.Buffer
	if code := healthcheck(t.Context(), []string{"HTTP_ADDR=" + addr}, &stderr); code != 0 {
		t.Errorf("healthcheck of a healthy bot = %d, want 0 (%s)", code, stderr.String())
	}
	status.Store(http.StatusServiceUnavailable)
	_, port, _ := net.SplitHostPort(addr)
	if code := healthcheck(t.Context(), []string{"HTTP_ADDR=:" + port}, &stderr); code != 1 {
		t.Errorf("healthcheck of a 503 = %d, want 1", code)
	}
	_ = srv.Close()
	if code := healthcheck(t.Context(), []string{"HTTP_ADDR=" + addr}, &stderr); code != 1 {
		t.Errorf("healthcheck of a stopped bot = %d, want 1", code)
	}
}

func TestHealthzURL(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{":8080", "http://127.0.0.1:8080/healthz"},
		{"", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:9000", "http://127.0.0.1:9000/healthz"},
		{"[::]:9000", "http://127.0.0.1:9000/healthz"},
		{"10.1.2.3:80", "http://10.1.2.3:80/healthz"},
		{"[::1]:80", "http://[::1]:80/healthz"},
		{"127.0.0.1:0", ""},
		{"no-port", ""},
	} {
		got, err := healthzURL(tc.addr)
		if tc.want == "" {
			if err == nil {
				t.Errorf("healthzURL(%q) = %q, want an error", tc.addr, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("healthzURL(%q) = %q, %v, want %q", tc.addr, got, err, tc.want)
		}
	}
}

// The fake answers 10014 for a wrong app id too; Feishu answers 10003.
func TestCredentialsFixNamesTheVariable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&feishu.Error{Code: 10003}, "FEISHU_APP_ID"},
		{&feishu.Error{Code: 10014}, "FEISHU_APP_SECRET"},
		{&feishu.Error{Code: 99991663}, "FEISHU_APP_SECRET"},
		{errors.New("dial tcp: connection refused"), "FEISHU_BASE_URL"},
	} {
		if got := credentialsFix(tc.err, "cli_x"); !strings.Contains(got, tc.want) {
			t.Errorf("credentialsFix(%v) = %q, want it to name %s", tc.err, got, tc.want)
		}
	}
}
