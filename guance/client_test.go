package guance

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testKey = "test-key-SECRET-abcdef"
	// baseURLPath is a non-empty prefix under which the API is mounted, to catch
	// absolute paths in the client (go-github's setup does the same).
	baseURLPath = "/guance-prefix"
)

// setup starts a test server with a mux for the API under baseURLPath and a client
// talking to it without a limiter. Tests register handlers on mux with full API paths,
// e.g. "POST /api/v1/issue/list".
func setup(t *testing.T, opts ...Option) (*Client, *http.ServeMux, string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unhandled request %s %s", r.Method, r.URL.Path)
		http.Error(w, "unhandled", http.StatusBadRequest)
	})
	api := http.NewServeMux()
	api.Handle(baseURLPath+"/", http.StripPrefix(baseURLPath, mux))
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request outside %s: %s %s (absolute path?)", baseURLPath, r.Method, r.URL.Path)
		http.Error(w, "outside", http.StatusBadRequest)
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	opts = append([]Option{WithLimiter(nil)}, opts...)
	c, err := NewClient(srv.URL+baseURLPath+"/", testKey, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c, mux, srv.URL
}

// testRequest checks what every request must carry.
func testRequest(t *testing.T, r *http.Request, method string) {
	t.Helper()
	if got := r.Method; got != method {
		t.Errorf("method = %s, want %s", got, method)
	}
	if got := r.Header.Get("DF-API-KEY"); got != testKey {
		t.Errorf("DF-API-KEY = %q, want %q", got, testKey)
	}
	if got, want := r.Header.Get("Content-Type"), "application/json;charset=UTF-8"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
}

// testBody checks the request body byte for byte.
func testBody(t *testing.T, r *http.Request, want string) {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if got := string(b); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
}

// reply writes a JSON answer.
func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// ok wraps content in a success envelope.
func ok(content string) string {
	return `{"code":200,"content":` + content + `,"errorCode":"","message":"","success":true,"traceId":"13848669999527981167"}`
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"https://openapi.guance.com", "https://openapi.guance.com/api/v1"},
		{"https://openapi.guance.com/", "https://openapi.guance.com/api/v1"},
		{" https://openapi.guance.com// ", "https://openapi.guance.com/api/v1"},
		{"https://openapi.guance.com/api/v1", "https://openapi.guance.com/api/v1"},
		{"https://openapi.guance.com/api/v1/", "https://openapi.guance.com/api/v1"},
		{"http://127.0.0.1:9000/prefix", "http://127.0.0.1:9000/prefix/api/v1"},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.in, testKey)
		if err != nil {
			t.Errorf("NewClient(%q): %v", tt.in, err)
			continue
		}
		if c.baseURL != tt.want {
			t.Errorf("NewClient(%q).baseURL = %q, want %q", tt.in, c.baseURL, tt.want)
		}
	}

	for _, bad := range []string{"", "openapi.guance.com", "ftp://x", "http://", "http://[::1", "https://u:p@x", "https://x/?a=b"} {
		if _, err := NewClient(bad, testKey); err == nil {
			t.Errorf("NewClient(%q) = nil error, want one", bad)
		}
	}
	for _, key := range []string{"", "a\nb"} {
		if _, err := NewClient("https://x", key); err == nil {
			t.Errorf("NewClient with key %q = nil error, want one", key)
		}
	}
}

func TestNewClient_defaults(t *testing.T) {
	c, err := NewClient("https://x", testKey, WithHTTPClient(nil), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.hc.Timeout != 30*time.Second {
		t.Errorf("timeout = %v, want 30s", c.hc.Timeout)
	}
	wl, ok := c.limiter.(*WindowLimiter)
	if !ok || wl.n != 18 || wl.per != time.Minute {
		t.Errorf("limiter = %#v, want 18 per minute", c.limiter)
	}
	hc := &http.Client{Timeout: time.Second}
	c, err = NewClient("https://x", testKey, WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	if c.hc == hc || hc.CheckRedirect != nil || c.hc.Timeout != time.Second {
		t.Errorf("WithHTTPClient: the caller's client must be copied, not changed")
	}
}

func TestClient_envelope(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr bool
	}{
		{"OK", 200, ok(`[]`), false},
		{"SuccessMissing", 200, `{"code":200,"content":[]}`, false},
		{"CodeMissing", 200, `{"content":[],"success":true}`, false},
		{"ExtraFields", 200, `{"code":200,"content":[],"success":true,"traceId":12,"more":{"x":1}}`, false},
		{"SuccessFalse", 200, `{"code":200,"content":null,"errorCode":"ft.Oops","message":"no","success":false,"traceId":"9"}`, true},
		{"CodeNot200", 200, `{"code":500,"content":null,"errorCode":"InternalError","message":"boom","traceId":"9"}`, true},
		{"NotJSON", 200, `<html>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, mux, _ := setup(t)
			mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
				reply(w, tt.status, tt.body)
			})
			_, err := c.ListChannels(t.Context())
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ListChannels error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestClient_envelopeErrorFields(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, `{"code":200,"content":null,"errorCode":"ft.Oops","message":"nope","success":false,"traceId":"77"}`)
	})
	_, err := c.ListChannels(t.Context())
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("ListChannels error = %v, want *Error", err)
	}
	want := Error{Method: "GET", Path: "/api/v1/channel/quick_list", StatusCode: 200, Code: "ft.Oops", Message: "nope", TraceID: "77"}
	if *e != want {
		t.Errorf("error = %#v, want %#v", *e, want)
	}
	if got, want := e.Error(), "guance: GET /api/v1/channel/quick_list: 200 ft.Oops: nope (trace 77)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestClient_bodyTooLarge(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, ok(`"`+strings.Repeat("x", maxBodySize)+`"`))
	})
	if _, err := c.ListChannels(t.Context()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ListChannels error = %v, want a too-large error", err)
	}
}

func TestClient_noRedirects(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("redirect followed to %s with key %q", r.URL.Path, r.Header.Get("DF-API-KEY"))
	}))
	t.Cleanup(other.Close)
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
	})
	_, err := c.ListChannels(t.Context())
	if e, ok := errors.AsType[*Error](err); !ok || e.StatusCode != http.StatusFound {
		t.Errorf("ListChannels error = %v, want *Error with 302", err)
	}
}

// fakeLimiter counts Waits and records penalties.
type fakeLimiter struct {
	mu        sync.Mutex
	waits     int
	penalties []time.Time
}

func (l *fakeLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits++
	return ctx.Err()
}

func (l *fakeLimiter) Penalize(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.penalties = append(l.penalties, until)
}

func TestClient_throttlePenalizesLimiter(t *testing.T) {
	lim := &fakeLimiter{}
	c, mux, _ := setup(t, WithLimiter(lim))
	now := time.Unix(1700000000, 0)
	c.now = func() time.Time { return now }
	calls := 0
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			reply(w, 401, `{"code":401,"content":null,"errorCode":"ft.TriggerApiAkCurrentLimiting","message":"limited","success":false,"traceId":"1"}`)
			return
		}
		reply(w, 200, ok(`[]`))
	})
	_, err := c.ListChannels(t.Context())
	if !errors.Is(err, ErrThrottled) {
		t.Fatalf("ListChannels error = %v, want ErrThrottled", err)
	}
	if _, err := c.ListChannels(t.Context()); err != nil {
		t.Fatalf("second ListChannels: %v", err)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.waits != 2 {
		t.Errorf("limiter waits = %d, want 2 (one per request; no internal retry)", lim.waits)
	}
	if len(lim.penalties) != 1 || !lim.penalties[0].Equal(now.Add(time.Minute)) {
		t.Errorf("penalties = %v, want [%v]", lim.penalties, now.Add(time.Minute))
	}
}

func TestClient_limiterErrorStopsRequest(t *testing.T) {
	c, _, _ := setup(t, WithLimiter(NewWindowLimiter(1, time.Hour)))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.ListChannels(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ListChannels error = %v, want context.Canceled", err)
	}
	if Retryable(err) {
		t.Errorf("Retryable(%v) = true, want false", err)
	}
}

func TestPageInfo_tolerant(t *testing.T) {
	var p PageInfo
	if err := json.Unmarshal([]byte(`{"count":"2","pageIndex":1.0,"pageSize":null,"totalCount":5,"x":1}`), &p); err != nil {
		t.Fatal(err)
	}
	if want := (PageInfo{Count: 2, PageIndex: 1, TotalCount: 5}); p != want {
		t.Errorf("PageInfo = %+v, want %+v", p, want)
	}
}

// blockingLimiter grants nothing: Wait says it waits, then returns when ctx ends.
type blockingLimiter struct{ waiting chan<- struct{} }

func (l blockingLimiter) Wait(ctx context.Context) error {
	l.waiting <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// TestClient_waitBound: a call under WithWaitBound stops waiting for the limiter when the
// bound ends, sending nothing, while a request already granted outlives the bound.
func TestClient_waitBound(t *testing.T) {
	c, mux, _ := setup(t, WithLimiter(NewWindowLimiter(1, time.Hour)))
	var (
		mu    sync.Mutex
		calls int
	)
	arrived, answer := make(chan struct{}), make(chan struct{})
	mux.HandleFunc("GET /api/v1/channel/quick_list", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		arrived <- struct{}{}
		<-answer
		reply(w, 200, ok(`[]`))
	})

	// Granted, then the bound ends while the request is under way: it is answered.
	bound, end := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.ListChannels(WithWaitBound(t.Context(), bound))
		errc <- err
	}()
	<-arrived
	end()
	close(answer)
	if err := <-errc; err != nil {
		t.Fatalf("ListChannels granted before the bound ended = %v, want no error", err)
	}

	// The next call waits on the limiter until its bound ends.
	waiting := make(chan struct{})
	c.limiter = blockingLimiter{waiting}
	bound, end = context.WithCancel(t.Context())
	go func() {
		_, err := c.ListChannels(WithWaitBound(t.Context(), bound))
		errc <- err
	}()
	<-waiting
	end()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("ListChannels waiting when the bound ended = %v, want context.Canceled", err)
	}
	// A bound that has ended already sends nothing either, whatever the limiter says.
	c.limiter = NewWindowLimiter(1, time.Hour)
	bound, end = context.WithTimeout(t.Context(), 0)
	defer end()
	if _, err := c.ListChannels(WithWaitBound(t.Context(), bound)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ListChannels with an ended bound = %v, want context.DeadlineExceeded", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("requests = %d, want 1", calls)
	}
}
