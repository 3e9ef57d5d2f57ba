// Package guancetest is a stateful, in-memory fake of the parts of the Guance OpenAPI
// that package guance uses, for tests. It serves on 127.0.0.1 through httptest.
//
// The fake is strict where Guance is documented and makes a documented choice where it
// is not:
//   - Every request needs DF-API-KEY equal to Server.APIKey, else 403 ft.InvalidAPIKey.
//   - At most Limit (20) requests per key are accepted in any sliding Window (60 s); more
//     get HTTP 401 with errorCode ft.TriggerApiAkCurrentLimiting, as Guance does.
//     Throttled requests are not counted in the window (they are in Requests).
//   - issue/list filters startTime/endTime on createAt, both bounds inclusive and either
//     optional; returns rows in a scrambled but deterministic order (Guance documents
//     no order); pageSize is at most 100; deleted issues are returned with deleteAt > 0.
//     An unknown channelUUID answers HTTP 404 with errorCode ft.NotFound; an empty one
//     means the default channel. Filters with equal:true on the same key are OR-ed,
//     all other filters AND-ed.
//   - issue/{uuid}/get answers 404 for an unknown or deleted issue.
//   - issue/{uuid}/modify accepts only a body of exactly {"statusType":N} with N in
//     10, 15, 20, 25, 30; anything else (extend included) answers 400 ft.ParamError.
//   - reply/list orders by createAt (default "-createAt"), ties by creation order;
//     pageSize defaults to 10 and is at most 100; pageInfo is at the top level.
//   - reply/create needs issueUUID and extend, and content of at most 65535 runes.
//   - Unknown routes fail the test (t.Errorf) and answer 400 RouterNotFound.
//
// Exported fields may be set before the first request or between requests; the handler
// reads them under the server's lock. The fake never sleeps.
package guancetest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// Defaults of a new Server.
const (
	DefaultAPIKey = "test-api-key-SECRET-1234"
	DefaultKeyID  = "wsak_bot0001"
	// DefaultKeyName is the API key's name, shown as the author of what the key writes.
	DefaultKeyName = "issuebot"
	// DefaultChannelUUID is the uuid of the "default" channel, which holds every issue.
	DefaultChannelUUID = "chan_default"
	// WorkspaceUUID is the workspace of everything the fake holds.
	WorkspaceUUID = "wksp_test"
	// DefaultPerson is the person who creates issues and acts in the UI unless told.
	DefaultPerson = "alice"
)

// Server is the fake Guance OpenAPI. Build it with NewServer.
type Server struct {
	// URL is the base URL to give guance.NewClient, e.g. "http://127.0.0.1:1234".
	URL string
	// APIKey is the only DF-API-KEY accepted.
	APIKey string
	// KeyID is the API key's id (wsak_…), the creator of what the key writes.
	KeyID string
	// KeyName is the API key's name, the creatorInfo.name of what the key writes.
	KeyName string
	// Limit is how many requests a window accepts; <= 0 disables throttling.
	Limit int
	// Window is the length of the sliding throttle window.
	Window time.Duration
	// Now is the clock for createAt, updateAt, the throttle window and Requests.
	Now func() time.Time
	// ReplyBumpsUpdateAt makes a new reply (by API or by AddHumanReply) set the issue's
	// updateAt. Guance does not document whether it does.
	ReplyBumpsUpdateAt bool
	// BareArrayList makes issue/list answer content as a bare array of issues instead of
	// {data, pageInfo}.
	BareArrayList bool
	// Fail, when set, is asked first about every request; ok true answers status and
	// body as they are. It may read the request body.
	Fail func(r *http.Request) (status int, body string, ok bool)

	t   testing.TB
	srv *httptest.Server

	mu            sync.Mutex
	seq           int64
	channels      []Channel
	levels        []Level
	issues        map[string]*Issue
	replies       map[string][]*Reply
	people        map[string]string // name → acnt uuid
	accepted      []time.Time
	requests      []Request
	throttled     int
	modifyBodies  [][]byte
	failNext      []failure
	down          bool
	throttleUntil time.Time
	traces        int64
}

// failure is one injected answer of FailNext.
type failure struct {
	status int
	code   string
}

// Request is a request the server received.
type Request struct {
	Time   time.Time
	Method string
	Path   string
	Query  string
	Status int
}

// Option configures a Server in NewServer.
type Option func(*Server)

// WithAPIKey sets the accepted API key.
func WithAPIKey(key string) Option { return func(s *Server) { s.APIKey = key } }

// WithLimit sets the throttle: at most n requests in any window of length per.
func WithLimit(n int, per time.Duration) Option {
	return func(s *Server) { s.Limit, s.Window = n, per }
}

// WithClock sets the server's clock.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.Now = now } }

// WithReplyBumpsUpdateAt sets ReplyBumpsUpdateAt.
func WithReplyBumpsUpdateAt(b bool) Option { return func(s *Server) { s.ReplyBumpsUpdateAt = b } }

// WithBareArrayList sets BareArrayList.
func WithBareArrayList(b bool) Option { return func(s *Server) { s.BareArrayList = b } }

// WithFail sets the Fail hook.
func WithFail(f func(r *http.Request) (status int, body string, ok bool)) Option {
	return func(s *Server) { s.Fail = f }
}

// NewServer starts a fake on 127.0.0.1 with a "default" channel and the four system
// levels. It is closed when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		APIKey:  DefaultAPIKey,
		KeyID:   DefaultKeyID,
		KeyName: DefaultKeyName,
		Limit:   20,
		Window:  time.Minute,
		Now:     time.Now,
		t:       t,
		issues:  make(map[string]*Issue),
		replies: make(map[string][]*Reply),
		people:  make(map[string]string),
	}
	for _, opt := range opts {
		opt(s)
	}
	now := s.now().Unix()
	s.seq = 1
	s.channels = []Channel{{
		CreateAt: now, Creator: s.person(DefaultPerson), DeleteAt: -1, Description: "",
		ID: 1, Name: "default", NotifyTarget: []string{}, UpdateAt: now,
		Updator: s.person(DefaultPerson), UUID: DefaultChannelUUID, WorkspaceUUID: WorkspaceUUID,
	}}
	for i, l := range []struct{ name, color, desc string }{
		{"P0", "#E94444", "important function down, wide user impact"},
		{"P1", "#FF7931", "important function down, limited impact"},
		{"P2", "#FFB44A", "peripheral function down"},
		{"P3", "#C9C9C9", "impact unknown"},
	} {
		s.levels = append(s.levels, Level{
			UUID: "system_level_" + strconv.Itoa(i), Name: l.name, Color: l.color, Description: l.desc,
			IsDefault: true, CreateAt: now, UpdateAt: now, DeleteAt: -1, WorkspaceUUID: WorkspaceUUID,
		})
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("guancetest: listen: %v", err)
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Listener = ln
	s.srv.Start()
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// now reads the clock; s.mu is held or the server is not yet serving.
func (s *Server) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// nextSeq returns a fresh sequence number; s.mu is held.
func (s *Server) nextSeq() int64 {
	s.seq++
	return s.seq
}

// person returns the account uuid of a person known by name, making one up the first
// time; names that already are acnt_ or wsak_ uuids are their own uuid. s.mu is held.
func (s *Server) person(name string) string {
	if strings.HasPrefix(name, "acnt_") || strings.HasPrefix(name, "wsak_") {
		return name
	}
	if id, ok := s.people[name]; ok {
		return id
	}
	id := fmt.Sprintf("acnt_%04d", len(s.people)+1)
	s.people[name] = id
	return id
}

// userInfo returns the creatorInfo of a person, or of the API key. s.mu is held.
func (s *Server) userInfo(name string) UserInfo {
	if name == s.KeyID || name == s.KeyName {
		return UserInfo{Email: s.KeyID, Name: s.KeyName, Username: s.KeyID, UUID: s.KeyID}
	}
	id := s.person(name)
	email := name + "@example.com"
	if id == name {
		email = name
	}
	return UserInfo{Email: email, Name: name, Username: email, UUID: id}
}

// ServeHTTP answers one OpenAPI request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	fail := s.Fail
	s.mu.Unlock()
	if fail != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if status, b, ok := fail(r); ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.record(r, status)
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			w.Header().Set("X-Trace-Id", s.traceID())
			w.WriteHeader(status)
			_, _ = io.WriteString(w, b)
			return
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	s.mu.Lock()
	defer s.mu.Unlock()
	status := s.handle(w, r, body)
	s.record(r, status)
}

// record appends r to the request log; s.mu is held.
func (s *Server) record(r *http.Request, status int) {
	s.requests = append(s.requests, Request{
		Time: s.now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: status,
	})
}

// handle applies faults, authentication and throttling, then routes. It returns the
// status written. s.mu is held.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, body []byte) int {
	now := s.now()
	if s.down {
		return s.fail(w, http.StatusServiceUnavailable, "InternalError", "guancetest: server is down")
	}
	if now.Before(s.throttleUntil) {
		s.throttled++
		return s.throttle(w)
	}
	if len(s.failNext) > 0 {
		f := s.failNext[0]
		s.failNext = s.failNext[1:]
		if f.status == http.StatusUnauthorized && strings.Contains(f.code, "CurrentLimiting") {
			s.throttled++
		}
		return s.fail(w, f.status, f.code, "guancetest: injected failure")
	}
	if r.Header.Get("DF-API-KEY") != s.APIKey {
		return s.fail(w, http.StatusForbidden, "ft.InvalidAPIKey", "无效的 API Key")
	}
	if s.Limit > 0 {
		window := s.Window
		if window <= 0 {
			window = time.Minute
		}
		i := 0
		for i < len(s.accepted) && !s.accepted[i].Add(window).After(now) {
			i++
		}
		s.accepted = s.accepted[i:]
		if len(s.accepted) >= s.Limit {
			s.throttled++
			return s.throttle(w)
		}
		s.accepted = append(s.accepted, now)
	}
	if r.Method == http.MethodPost && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return s.fail(w, http.StatusBadRequest, "ft.ParamError", "Content-Type must be application/json")
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/api/v1/")
	if !ok {
		return s.unhandled(w, r)
	}
	seg := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodGet && rest == "channel/quick_list":
		return s.ok(w, s.channels, nil)
	case r.Method == http.MethodGet && rest == "issue-level/list":
		return s.ok(w, s.levels, nil)
	case r.Method == http.MethodPost && rest == "issue/list":
		return s.listIssues(w, body)
	case r.Method == http.MethodPost && rest == "issue/reply/create":
		return s.createReply(w, body)
	case r.Method == http.MethodGet && len(seg) == 4 && seg[0] == "issue" && seg[1] == "reply" && seg[3] == "list":
		return s.listReplies(w, r, seg[2])
	case r.Method == http.MethodGet && len(seg) == 3 && seg[0] == "issue" && seg[2] == "get":
		return s.getIssue(w, seg[1])
	case r.Method == http.MethodPost && len(seg) == 3 && seg[0] == "issue" && seg[2] == "modify":
		return s.modifyIssue(w, seg[1], body)
	}
	return s.unhandled(w, r)
}

// unhandled fails the test and answers like Guance for an unknown route. s.mu is held.
func (s *Server) unhandled(w http.ResponseWriter, r *http.Request) int {
	s.t.Errorf("guancetest: unhandled request %s %s", r.Method, r.URL.Path)
	return s.fail(w, http.StatusBadRequest, "RouterNotFound", "route not found")
}

// envelope is Guance's response wrapper.
type envelope struct {
	Code      int       `json:"code"`
	Content   any       `json:"content"`
	PageInfo  *PageInfo `json:"pageInfo,omitempty"`
	ErrorCode string    `json:"errorCode"`
	Message   string    `json:"message"`
	Success   bool      `json:"success"`
	TraceID   string    `json:"traceId"`
}

// PageInfo is Guance's page description.
type PageInfo struct {
	Count      int `json:"count"`
	PageIndex  int `json:"pageIndex"`
	PageSize   int `json:"pageSize"`
	TotalCount int `json:"totalCount"`
}

// traceID returns a fresh trace id; s.mu is held.
func (s *Server) traceID() string {
	s.traces++
	return strconv.FormatInt(1384866999952798100+s.traces, 10)
}

// write sends an envelope; s.mu is held.
func (s *Server) write(w http.ResponseWriter, status int, env envelope) int {
	env.Code = status
	env.TraceID = s.traceID()
	b, err := json.Marshal(env)
	if err != nil {
		s.t.Errorf("guancetest: encode response: %v", err)
		status = http.StatusInternalServerError
		b = []byte(`{"code":500,"content":null,"errorCode":"InternalError","message":"encode","success":false,"traceId":""}`)
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("X-Trace-Id", env.TraceID)
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

// ok answers 200 with content; s.mu is held.
func (s *Server) ok(w http.ResponseWriter, content any, pi *PageInfo) int {
	return s.write(w, http.StatusOK, envelope{Content: content, PageInfo: pi, Success: true})
}

// fail answers an error envelope; s.mu is held.
func (s *Server) fail(w http.ResponseWriter, status int, code, msg string) int {
	return s.write(w, status, envelope{ErrorCode: code, Message: msg})
}

// throttle answers Guance's per-key throttle; s.mu is held.
func (s *Server) throttle(w http.ResponseWriter) int {
	return s.fail(w, http.StatusUnauthorized, "ft.TriggerApiAkCurrentLimiting", "API Key 请求频率超过限制")
}

// paramError answers 400 ft.ParamError; s.mu is held.
func (s *Server) paramError(w http.ResponseWriter, format string, args ...any) int {
	return s.fail(w, http.StatusBadRequest, "ft.ParamError", fmt.Sprintf(format, args...))
}

// notFound answers Guance's "no object or no permission"; s.mu is held.
func (s *Server) notFound(w http.ResponseWriter, what string) int {
	return s.fail(w, http.StatusNotFound, "ft.NotFound", "无权限访问数据或找不到操作对象: "+what)
}

// FailNext makes the next n requests answer status with errorCode (after the Fail hook,
// before authentication and throttling).
func (s *Server) FailNext(n, status int, errorCode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failNext = append(s.failNext, failure{status, errorCode})
	}
}

// Down makes every request answer 503 InternalError while down is true.
func (s *Server) Down(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// ThrottleFor makes every request answer Guance's 401 throttle for d from now (by Now).
func (s *Server) ThrottleFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttleUntil = s.now().Add(d)
}

// Throttled returns how many requests were answered with a throttle.
func (s *Server) Throttled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// MaxInWindow returns the largest number of requests received in any window of length d
// (all requests, whatever their answer).
func (s *Server) MaxInWindow(d time.Duration) int {
	s.mu.Lock()
	times := make([]time.Time, len(s.requests))
	for i, r := range s.requests {
		times[i] = r.Time
	}
	s.mu.Unlock()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	best, j := 0, 0
	for i := range times {
		if j < i {
			j = i
		}
		for j < len(times) && times[j].Before(times[i].Add(d)) {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// ModifyBodies returns the raw bodies of every issue modify request, in order.
func (s *Server) ModifyBodies() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, len(s.modifyBodies))
	for i, b := range s.modifyBodies {
		out[i] = bytes.Clone(b)
	}
	return out
}

// hash64 scrambles issue order deterministically.
func hash64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// sortedBy returns xs sorted by key, ties kept in order.
func sortedBy[T any, K cmp.Ordered](xs []T, key func(T) K) []T {
	xs = slices.Clone(xs)
	slices.SortStableFunc(xs, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return xs
}

// runeLen counts the runes of s.
func runeLen(s string) int { return utf8.RuneCountInString(s) }
