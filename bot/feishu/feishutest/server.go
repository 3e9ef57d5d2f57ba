// Package feishutest is a stateful, strict fake of the Feishu (Lark) Open Platform for tests.
//
// A Server issues tenant access tokens and checks them; keeps the messages a bot creates,
// replies to, patches and reacts to; enforces the platform's content size limits and rate
// limits with the platform's error codes; serves the long-connection endpoint that the SDK's
// larkws.Client dials; and builds, signs and delivers events, over the long connection or as
// signed HTTP callbacks.
//
// The package's own tests drive it with the real SDK, github.com/larksuite/oapi-sdk-go/v3
// v3.12.0. Where the real platform's behaviour is not documented, the choice made here is
// written beside the code and marked "unverified".
//
// Time: Server.Now (the platform clock) stamps messages and events and decides the 14-day patch
// window; tests may move it. Rate limits always use the wall clock, because they are about how
// fast a client really sends. Tokens never expire on the platform clock, so moving Now by weeks
// does not invalidate the SDK's cached token; use InvalidateTokens for that.
package feishutest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	larkws "github.com/larksuite/oapi-sdk-go/v3/ws"
)

// Feishu error codes the fake answers with.
const (
	CodeOK                 = 0
	CodeRateLimited        = 99991400 // HTTP 429: app-level frequency limit
	CodeTokenMissing       = 99991661
	CodeTokenInvalid       = 99991663 // tenant access token invalid
	CodeUnhandled          = 99991672 // only for requests the fake does not know; the test fails anyway
	CodeFieldValidation    = 99992402 // body or query fails validation
	CodeAppSecretInvalid   = 10014
	CodeInvalidParam       = 230001
	CodeBotNotInChat       = 230002
	CodeMessageNotFound    = 230011 // unverified for a never-existing id; the platform documents it as "recalled"
	CodeNotSender          = 230012
	CodeChatRateLimited    = 230020 // per chat send limit, per message patch limit
	CodeContentTooLong     = 230025
	CodePatchWindowExpired = 230031
	CodeNoUserAuthority    = 41050 // unverified for an unknown open_id
	CodeInternal           = 1500  // generic body of injected 5xx failures
	CodeWSAuthFailed       = 403   // long-connection bootstrap with wrong credentials
)

// Limits of the real platform (reference/feishu.md §2, §7).
const (
	MaxCardBytes = 30 * 1024  // interactive and post content
	MaxTextBytes = 150 * 1024 // text content
	PatchWindow  = 14 * 24 * time.Hour
	UUIDWindow   = time.Hour
)

// serverSeq makes app ids and tokens unique in the process: the SDK's token cache is global
// and keyed by app id (not base URL), so a token cached against one fake must never be valid
// at another.
var serverSeq atomic.Int64

// Server is a fake Feishu Open Platform on 127.0.0.1. Configure exported fields through
// options or before the first request; they are read without locking.
type Server struct {
	// URL is the base URL to give lark.WithOpenBaseUrl and larkws.WithDomain.
	URL string
	// AppID defaults to a value unique in the process ("cli_test_<n>").
	AppID     string
	AppSecret string
	// BotOpenID and BotName are what GET /open-apis/bot/v3/info reports.
	BotOpenID string
	BotName   string
	// VerificationToken goes into header.token of the events the builders make.
	VerificationToken string
	// TenantKey goes into events.
	TenantKey string

	// ChatQPS limits creates and replies into one chat, PatchQPS patches of one message, and
	// AppQPS calls of one API (method and route) by the app, each over a sliding 1 s window.
	// Zero disables a limit.
	ChatQPS, PatchQPS, AppQPS int
	// RateWindow is the span the QPS limits count over: one second, as on the real
	// platform. Tests that assert a limit is hit stretch it, so a slow machine cannot
	// spread their burst over two windows.
	RateWindow time.Duration

	// WSConfig is the ClientConfig handed to long-connection clients. Zero fields are replaced
	// by the defaults (-1, 1, 1, 5) because the SDK applies zeros literally and busy-loops.
	WSConfig larkws.ClientConfig

	// Now is the platform clock.
	Now func() time.Time

	// Fail, when set, is consulted for every authenticated Open API call after the token check
	// and before anything else. If ok, the fake answers status and body (as JSON) and does
	// nothing more. It may read r.Body; the handler still sees the whole body.
	Fail func(r *http.Request) (status int, body string, ok bool)

	// AfterSend, when set, is called with every message the fake created (a new message or a
	// reply), after it exists and before the answer is written: a test can kill the client
	// there, so that the message was sent but its sender never learns it. It must not call
	// the server.
	AfterSend func(m Message)

	t  testing.TB
	hs *httptest.Server
	id int64

	mu            sync.Mutex
	seqs          map[string]int // id counters by kind
	tokens        map[string]bool
	tokenRequests int
	chats         map[string]bool
	chatInfo      map[string]ChatSpec
	msgs          map[string]*Message
	order         []string
	uuids         map[string]uuidUse
	threads       map[string]string // root message id → thread id
	users         map[string]string // open_id → name
	lookups       map[string]int
	requests      []Request
	throttled     int
	windows       map[string][]time.Time
	failNext      []injected
	failRate      float64
	rng           *rand.Rand
	lose, drop    int
	ws            wsState
}

// Request is one request the fake answered. A long connection (GET /ws) is listed when it ends.
type Request struct {
	// Time is when the request arrived, on the wall clock (not Now), so pacing can be checked.
	Time   time.Time
	Method string
	Path   string
	// Status is the HTTP status; 0 when the connection was dropped without an answer.
	Status int
	// Code is the Feishu code in the body, 0 on success.
	Code int
}

type uuidUse struct {
	messageID string
	at        time.Time
}

type injected struct{ status, code int }

// Option configures a Server.
type Option func(*Server)

// WithAppID sets the app id. Keep it unique per server: the SDK's token cache is process-wide.
func WithAppID(id string) Option { return func(s *Server) { s.AppID = id } }

// WithAppSecret sets the app secret.
func WithAppSecret(secret string) Option { return func(s *Server) { s.AppSecret = secret } }

// WithNow sets the platform clock.
func WithNow(now func() time.Time) Option { return func(s *Server) { s.Now = now } }

// WithRateLimits sets ChatQPS, PatchQPS and AppQPS; zero disables one.
func WithRateLimits(chatQPS, patchQPS, appQPS int) Option {
	return func(s *Server) { s.ChatQPS, s.PatchQPS, s.AppQPS = chatQPS, patchQPS, appQPS }
}

// WithVerificationToken sets the token put into events.
func WithVerificationToken(token string) Option {
	return func(s *Server) { s.VerificationToken = token }
}

// WithBot sets the bot's open_id and name.
func WithBot(openID, name string) Option {
	return func(s *Server) { s.BotOpenID, s.BotName = openID, name }
}

// NewServer starts a fake on 127.0.0.1 and closes it when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	id := serverSeq.Add(1)
	s := &Server{
		AppID:             fmt.Sprintf("cli_test_%d", id),
		AppSecret:         "app-secret-SECRET-5678",
		BotOpenID:         "ou_bot",
		BotName:           "issuebot",
		VerificationToken: "vt-test",
		TenantKey:         "tenant_test",
		ChatQPS:           5,
		PatchQPS:          5,
		AppQPS:            50,
		Now:               time.Now,
		t:                 t,
		id:                id,
		seqs:              map[string]int{},
		tokens:            map[string]bool{},
		chats:             map[string]bool{},
		chatInfo:          map[string]ChatSpec{},
		msgs:              map[string]*Message{},
		uuids:             map[string]uuidUse{},
		threads:           map[string]string{},
		users:             map[string]string{},
		lookups:           map[string]int{},
		windows:           map[string][]time.Time{},
	}
	s.ws.init()
	for _, o := range opts {
		o(s)
	}
	s.hs = httptest.NewServer(s.routes())
	s.URL = s.hs.URL
	t.Cleanup(func() {
		s.closeWS()
		s.hs.Close()
	})
	return s
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	open := func(pattern string, h func(*recorder, *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { h(w.(*recorder), r) })
	}
	api := func(pattern string, h func(*recorder, *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serveAPI(w.(*recorder), r, pattern, h) })
	}
	open("POST /open-apis/auth/v3/tenant_access_token/internal", s.tenantToken)
	api("POST /open-apis/im/v1/messages", s.createMessage)
	api("POST /open-apis/im/v1/messages/{message_id}/reply", s.replyMessage)
	api("PATCH /open-apis/im/v1/messages/{message_id}", s.patchMessage)
	api("POST /open-apis/im/v1/messages/{message_id}/reactions", s.createReaction)
	api("GET /open-apis/contact/v3/users/{user_id}", s.getUser)
	api("GET /open-apis/bot/v3/info", s.botInfo)
	api("GET /open-apis/im/v1/chats/{chat_id}", s.getChat)
	api("GET /open-apis/im/v1/chats/{chat_id}/members/is_in_chat", s.isInChat)
	open("POST "+larkws.GenEndpointUri, s.wsEndpoint)
	open("GET /ws", s.wsUpgrade)
	open("/", s.unhandled)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, logID: s.logID()}
		rec.Header().Set("X-Tt-Logid", rec.logID)
		start := time.Now()
		mux.ServeHTTP(rec, r)
		s.mu.Lock()
		s.requests = append(s.requests, Request{Time: start, Method: r.Method, Path: r.URL.Path, Status: rec.status, Code: rec.code})
		s.mu.Unlock()
	})
}

// serveAPI checks the tenant token, consults the injected failures and the per-API rate
// limit, then runs h.
func (s *Server) serveAPI(w *recorder, r *http.Request, pattern string, h func(*recorder, *http.Request)) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		s.fail(w, http.StatusBadRequest, CodeTokenMissing, "Missing access token for authorization")
		return
	}
	tok, isBearer := strings.CutPrefix(auth, "Bearer ")
	s.mu.Lock()
	valid := isBearer && s.tokens[tok]
	s.mu.Unlock()
	if !valid {
		s.fail(w, http.StatusBadRequest, CodeTokenInvalid, "Invalid access token for authorization")
		return
	}

	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "read body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if s.Fail != nil {
		if status, b, ok := s.Fail(r); ok {
			if status == 0 {
				status = http.StatusInternalServerError
			}
			s.writeRaw(w, status, []byte(b))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}

	s.mu.Lock()
	var inj *injected
	if len(s.failNext) > 0 {
		inj = &s.failNext[0]
		s.failNext = s.failNext[1:]
	}
	allowed := inj != nil || s.allow("api "+pattern, s.AppQPS)
	if !allowed {
		s.throttled++
	}
	s.mu.Unlock()
	switch {
	case inj != nil:
		s.fail(w, inj.status, inj.code, "feishutest: injected failure")
	case !allowed:
		w.Header().Set("x-ogw-ratelimit-limit", strconv.Itoa(s.AppQPS))
		w.Header().Set("x-ogw-ratelimit-reset", "1")
		s.fail(w, http.StatusTooManyRequests, CodeRateLimited, "request trigger frequency limit")
	default:
		h(w, r)
	}
}

// allow reports whether one more call fits into key's sliding window (RateWindow) of at most
// limit calls, and counts it if so. Rejected calls are not counted. Callers hold s.mu.
func (s *Server) allow(key string, limit int) bool {
	if limit <= 0 {
		return true
	}
	now := time.Now()
	span := s.RateWindow
	if span <= 0 {
		span = time.Second
	}
	win := s.windows[key]
	i := 0
	for i < len(win) && now.Sub(win[i]) >= span {
		i++
	}
	win = win[i:]
	if len(win) >= limit {
		s.windows[key] = win
		return false
	}
	s.windows[key] = append(win, now)
	return true
}

func (s *Server) tenantToken(w *recorder, r *http.Request) {
	var req struct {
		AppID     string `json:"app_id"`
		AppSecret string `json:"app_secret"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	s.tokenRequests++
	s.mu.Unlock()
	// Unverified: the platform's HTTP status for bad credentials; the SDK reads only the body.
	if req.AppID != s.AppID || req.AppSecret != s.AppSecret {
		s.fail(w, http.StatusBadRequest, CodeAppSecretInvalid, "app secret invalid")
		return
	}
	s.mu.Lock()
	tok := fmt.Sprintf("t-%d-%d", s.id, s.next("t"))
	s.tokens[tok] = true
	s.mu.Unlock()
	s.writeJSON(w, http.StatusOK, CodeOK, map[string]any{
		"code": 0, "msg": "ok", "tenant_access_token": tok, "expire": 7200,
	})
}

func (s *Server) unhandled(w *recorder, r *http.Request) {
	s.t.Errorf("feishutest: unhandled request %s %s", r.Method, r.URL.RequestURI())
	s.fail(w, http.StatusNotFound, CodeUnhandled, "feishutest: unhandled request "+r.Method+" "+r.URL.Path)
}

// decode reads a JSON body into v and answers 99992402 if it cannot.
func (s *Server) decode(w *recorder, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		s.fail(w, http.StatusBadRequest, CodeFieldValidation, "field validation failed: "+err.Error())
		return false
	}
	return true
}

func (s *Server) ok(w *recorder, data any) {
	s.writeJSON(w, http.StatusOK, CodeOK, map[string]any{"code": 0, "msg": "success", "data": data})
}

func (s *Server) fail(w *recorder, status, code int, msg string) {
	s.writeJSON(w, status, code, map[string]any{
		"code": code, "msg": msg, "error": map[string]any{"log_id": w.logID},
	})
}

func (s *Server) writeJSON(w *recorder, status, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.t.Errorf("feishutest: encode response: %v", err)
	}
	w.code = code
	s.writeRaw(w, status, b)
}

func (s *Server) writeRaw(w *recorder, status int, body []byte) {
	if w.code == 0 {
		var env struct {
			Code int `json:"code"`
		}
		if json.Unmarshal(body, &env) == nil {
			w.code = env.Code
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(body)
}

func (s *Server) logID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("2026%08d%04d", s.next("log"), s.id)
}

// next returns the next number of an id kind, from 1. Callers hold s.mu.
func (s *Server) next(kind string) int {
	s.seqs[kind]++
	return s.seqs[kind]
}

// recorder remembers what was answered, for Requests.
type recorder struct {
	http.ResponseWriter
	logID  string
	status int
	code   int
}

func (w *recorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Hijack lets the websocket upgrader and DropResponses take the connection over.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// TokenRequests reports how many tenant tokens were requested, right or wrong.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// InvalidateTokens makes every token issued so far invalid, as after a rotation; calls with
// them get HTTP 400 code 99991663. New token requests get fresh, valid tokens.
func (s *Server) InvalidateTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.tokens {
		s.tokens[k] = false
	}
}

// Requests returns every request answered so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Throttled reports how many calls were refused by a rate limit (230020 or 99991400).
func (s *Server) Throttled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled
}

// FailNext makes the next n authenticated Open API calls fail with the HTTP status and Feishu
// code given, e.g. FailNext(1, 500, 1) or FailNext(2, 502, 1500). They do nothing else.
func (s *Server) FailNext(n, status, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failNext = append(s.failNext, injected{status, code})
	}
}

// FailRate makes fraction p of the message creates and replies that pass validation fail with
// HTTP 500 code 1500 instead of being sent, chosen by a generator seeded with seed.
func (s *Server) FailRate(p float64, seed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failRate = p
	s.rng = rand.New(rand.NewSource(seed))
}

// LoseResponses makes the next n message creates and replies that succeed answer HTTP 500
// code 1500 although the message was sent and recorded: a lost response. A retry with the same
// uuid gets the message that was sent.
func (s *Server) LoseResponses(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose += n
}

// DropResponses is like LoseResponses, but the connection is closed without any answer, so the
// client sees a transport error rather than a 5xx.
func (s *Server) DropResponses(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop += n
}
