package guance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestError_classification(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		throttled bool
		badKey    bool
		notFound  bool
		temporary bool
	}{
		{
			name:   "KeyLimiter",
			status: 401, body: `{"code":401,"content":null,"errorCode":"ft.TriggerApiAkCurrentLimiting","message":"too many","success":false,"traceId":"1"}`,
			throttled: true, temporary: true,
		},
		{
			name:   "WorkspaceLimiter",
			status: 401, body: `{"code":401,"content":null,"errorCode":"ft.TriggerApiWorkspaceCurrentLimiting","message":"too many","success":false,"traceId":"1"}`,
			throttled: true, temporary: true,
		},
		{
			name:   "LimiterCodeOtherStatus",
			status: 403, body: `{"code":403,"errorCode":"ft.TriggerApiAkCurrentLimiting","success":false}`,
			throttled: true, temporary: true,
		},
		{name: "429", status: 429, body: `slow down`, throttled: true, temporary: true},
		{
			name:   "InvalidAPIKey",
			status: 403, body: `{"code":403,"content":null,"errorCode":"ft.InvalidAPIKey","message":"bad key","success":false,"traceId":"1"}`,
			badKey: true,
		},
		{
			name:   "InvalidApiKeyOld",
			status: 403, body: `{"code":403,"content":null,"errorCode":"InvalidApiKey","message":"bad key","success":false,"traceId":"1"}`,
			badKey: true,
		},
		{name: "401NoCode", status: 401, body: `{"code":401,"errorCode":"","success":false}`, badKey: true},
		{name: "403NoPermission", status: 403, body: `{"code":403,"errorCode":"ft.NoPermission","success":false}`},
		{name: "404", status: 404, body: `{"code":404,"errorCode":"ft.NotFound","success":false}`, notFound: true},
		{name: "404NotJSON", status: 404, body: `not found`, notFound: true},
		{name: "Envelope404", status: 200, body: `{"code":404,"content":null,"errorCode":"","message":"gone","success":false}`, notFound: true},
		{name: "500", status: 500, body: `{"code":500,"errorCode":"InternalError"}`, temporary: true},
		{name: "503", status: 503, body: `{"code":503,"errorCode":"InternalError","success":false}`, temporary: true},
		{name: "502HTML", status: 502, body: `<html>bad gateway</html>`, temporary: true},
		{name: "408", status: 408, body: ``, temporary: true},
		{name: "400", status: 400, body: `{"code":400,"errorCode":"RouterNotFound","success":false}`},
		{name: "200SuccessFalse", status: 200, body: `{"code":200,"errorCode":"ft.Oops","success":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, mux, _ := setup(t)
			mux.HandleFunc("GET /api/v1/issue-level/list", func(w http.ResponseWriter, r *http.Request) {
				reply(w, tt.status, tt.body)
			})
			_, err := c.ListLevels(t.Context())
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("ListLevels error = %v (%T), want *Error", err, err)
			}
			if got := errors.Is(err, ErrThrottled); got != tt.throttled {
				t.Errorf("errors.Is(%v, ErrThrottled) = %v, want %v", err, got, tt.throttled)
			}
			if got := errors.Is(err, ErrBadKey); got != tt.badKey {
				t.Errorf("errors.Is(%v, ErrBadKey) = %v, want %v", err, got, tt.badKey)
			}
			if got := errors.Is(err, ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", err, got, tt.notFound)
			}
			if got := e.Temporary(); got != tt.temporary {
				t.Errorf("Temporary() = %v, want %v", got, tt.temporary)
			}
			if got := Retryable(err); got != tt.temporary {
				t.Errorf("Retryable() = %v, want %v", got, tt.temporary)
			}
		})
	}
}

func TestError_Error(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{
			Error{Method: "POST", Path: "/api/v1/issue/list", StatusCode: 401, Code: "ft.TriggerApiAkCurrentLimiting", Message: "too many", TraceID: "123"},
			"guance: POST /api/v1/issue/list: 401 ft.TriggerApiAkCurrentLimiting: too many (trace 123)",
		},
		{Error{Method: "GET", Path: "/api/v1/x", StatusCode: 503}, "guance: GET /api/v1/x: 503"},
		{Error{Method: "GET", Path: "/api/v1/x", StatusCode: 404, Message: "not found"}, "guance: GET /api/v1/x: 404: not found"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	// A server that is closed: connection refused.
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	// A server that hangs until the client gives up.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)

	// A server that cuts the body short.
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"code":200,"content":[`)
	}))
	t.Cleanup(cut.Close)

	// A TLS server whose certificate the client does not trust.
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(untrusted.Close)

	call := func(base string, hc *http.Client, ctx context.Context) error {
		t.Helper()
		c, err := NewClient(base, testKey, WithLimiter(nil), WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ListChannels(ctx)
		if err == nil {
			t.Fatalf("ListChannels(%s) = nil error", base)
		}
		return err
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"Plain", errors.New("x"), false},
		{"ConnectionRefused", call(closedURL, nil, t.Context()), true},
		{"ClientTimeout", call(hang.URL, &http.Client{Timeout: 50 * time.Millisecond}, t.Context()), true},
		{"UnexpectedEOF", call(cut.URL, nil, t.Context()), true},
		{"UntrustedCertificate", call(untrusted.URL, nil, t.Context()), false},
		{"ContextCanceled", call(hang.URL, nil, canceled), false},
		{"ContextDeadline", call(hang.URL, nil, short), false},
		{"BareDeadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"WrappedNetError", fmt.Errorf("x: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}), true},
		{"WrappedThrottle", fmt.Errorf("x: %w", &Error{StatusCode: 401, Code: "ft.TriggerApiAkCurrentLimiting"}), true},
		{"WrappedBadKey", fmt.Errorf("x: %w", &Error{StatusCode: 403, Code: "ft.InvalidAPIKey"}), false},
	}
	for _, tt := range tests {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoSecretInErrorsOrLogs triggers every kind of failure and checks that the API key
// appears in neither the error nor the logs, even when the server echoes the headers.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	echo := func(r *http.Request) string {
		var b strings.Builder
		_ = r.Header.Write(&b)
		return b.String()
	}
	handlers := map[string]http.HandlerFunc{
		"BadKey": func(w http.ResponseWriter, r *http.Request) {
			reply(w, 403, `{"code":403,"errorCode":"ft.InvalidAPIKey","message":"invalid key `+r.Header.Get("DF-API-KEY")+`","success":false,"traceId":"`+r.Header.Get("DF-API-KEY")+`"}`)
		},
		"Throttle": func(w http.ResponseWriter, r *http.Request) {
			reply(w, 401, `{"code":401,"errorCode":"ft.TriggerApiAkCurrentLimiting","message":"key `+r.Header.Get("DF-API-KEY")+` limited","success":false}`)
		},
		"500EchoJSON": func(w http.ResponseWriter, r *http.Request) {
			msg, _ := jsonString(echo(r))
			reply(w, 500, `{"code":500,"errorCode":"InternalError","message":`+msg+`,"success":false}`)
		},
		"500EchoText": func(w http.ResponseWriter, r *http.Request) {
			reply(w, 500, echo(r))
		},
		"200EchoFailure": func(w http.ResponseWriter, r *http.Request) {
			msg, _ := jsonString(echo(r))
			reply(w, 200, `{"code":200,"errorCode":"`+r.Header.Get("DF-API-KEY")+`","message":`+msg+`,"success":false}`)
		},
		"200EchoGarbage": func(w http.ResponseWriter, r *http.Request) {
			reply(w, 200, "not json "+echo(r))
		},
	}

	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	for name, h := range handlers {
		c, mux, _ := setup(t, WithLogger(logger), WithLimiter(NewWindowLimiter(100, time.Minute)))
		mux.HandleFunc("GET /api/v1/channel/quick_list", h)
		_, err := c.ListChannels(t.Context())
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		errs = append(errs, err)
	}

	// Transport error: a closed server.
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	c, err := NewClient(closedURL, testKey, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetIssue(t.Context(), "issue_1")
	errs = append(errs, err)

	// Invalid URLs and arguments.
	_, err = NewClient("http://[::1", testKey, WithLogger(logger))
	errs = append(errs, err)
	_, err = c.GetIssue(t.Context(), "")
	errs = append(errs, err)
	_, err = NewClient("https://x", "bad\n"+testKey)
	errs = append(errs, err)

	for _, err := range errs {
		if err == nil {
			t.Errorf("expected an error, got nil")
			continue
		}
		if strings.Contains(err.Error(), testKey) {
			t.Errorf("error leaks the API key: %v", err)
		}
		var ue *url.Error
		if errors.As(err, &ue) && strings.Contains(ue.URL, testKey) {
			t.Errorf("url.Error leaks the API key: %v", err)
		}
	}
	out := logs.String()
	if out == "" {
		t.Errorf("no logs captured; the test would prove nothing")
	}
	if strings.Contains(out, testKey) {
		t.Errorf("logs leak the API key:\n%s", out)
	}
}

// jsonString quotes s as a JSON string.
func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}
