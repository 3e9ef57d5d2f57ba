// Package guance is a client for the parts of the Guance Cloud (观测云) OpenAPI that
// issuebot needs: 异常追踪 issues, their replies, channels and levels.
//
// One Client is one API key, and so one workspace. Every call goes through a rate
// limiter first (Guance allows 20 requests per minute per key and answers more with
// HTTP 401 and errorCode ft.TriggerApiAkCurrentLimiting); the default limiter spends at
// most 18 per minute. When Guance throttles anyway the client penalizes its limiter for a
// minute, so that all callers back off together.
//
// The client does not retry: a failed call returns at once, and callers decide what to
// do with errors.Is(err, ErrThrottled), ErrBadKey, ErrNotFound and Retryable(err).
// Some calls are not idempotent (CreateReply), so a blind retry here would be wrong.
//
// Guance's payloads drift in type between endpoints and versions (times as ints, floats,
// null or -1; levels as strings or ints; content as an object or a bare array), so the
// types in this package decode tolerantly.
//
// The API key is sent only in the DF-API-KEY header. It never appears in an error or a
// log line, and the client does not follow redirects, so it is never sent elsewhere.
package guance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// apiPrefix is the path of the OpenAPI under the site's base URL.
	apiPrefix = "/api/v1"
	// maxBodySize caps a successful response body.
	maxBodySize = 8 << 20
	// maxErrorBodySize caps an error response body.
	maxErrorBodySize = 1 << 20
	// throttlePenalty is how long the limiter is blocked after Guance throttles: the
	// server's window is one minute, so after a minute of silence it has room again.
	throttlePenalty = time.Minute
	// userAgent identifies the client to Guance.
	userAgent = "issuebot-guance/1"
)

// Client talks to the Guance OpenAPI with one API key. It is safe for concurrent use.
type Client struct {
	baseURL string // scheme://host[/prefix]/api/v1, no trailing slash
	apiKey  string
	hc      *http.Client
	limiter Limiter
	logger  *slog.Logger
	now     func() time.Time
	// onThrottle, when set, is called for every throttled answer (for metrics).
	onThrottle func()
}

// Option configures a Client in NewClient.
type Option func(*Client)

// WithHTTPClient sets the HTTP client used for every request. The default is
// &http.Client{Timeout: 30 * time.Second}. The client is copied and the copy refuses
// redirects, so that the DF-API-KEY header never follows a redirect to another host.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithLimiter sets the limiter every request waits on. The default is
// NewWindowLimiter(18, time.Minute). Share one limiter between all clients that use the
// same API key. A nil limiter disables client-side limiting.
func WithLimiter(l Limiter) Option {
	return func(c *Client) { c.limiter = l }
}

// WithOnThrottle registers f to be called whenever Guance answers with a throttle, so
// the caller can count them without parsing errors.
func WithOnThrottle(f func()) Option { return func(c *Client) { c.onThrottle = f } }

// WithLogger sets the logger. Requests are logged at debug level and throttling at warn
// level; the API key is never logged. A nil logger discards logs (the default).
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.logger = l
	}
}

// Limiter decides when the next request may go. Wait blocks until it may, or returns
// ctx's error. Two optional methods are used when present (*WindowLimiter has both):
// Acquire(ctx) (done func(), err error), which the client prefers to Wait and whose done
// it calls once the response is read; and Penalize(until time.Time), which the client
// calls when Guance throttles, so the limiter can hold every caller back.
type Limiter interface {
	Wait(ctx context.Context) error
}

// acquirer is the optional part of a Limiter that learns when a request is over (see
// WindowLimiter.Acquire); the client prefers it to Wait.
type acquirer interface {
	Acquire(ctx context.Context) (done func(), err error)
}

// penalizer is the optional part of a Limiter that the client uses on throttling.
type penalizer interface {
	Penalize(until time.Time)
}

// waitBoundKey is the context key of WithWaitBound.
type waitBoundKey struct{}

// WithWaitBound returns a context whose calls stop waiting for the limiter as soon as
// bound ends: the call then returns bound's error and sends nothing. A request the
// limiter has granted runs under ctx alone, so bound ending does not cut it off. A
// worker whose right to start requests can end before its work in hand does (a leader
// whose lease term is over, a process shutting down) passes that right as bound: the
// requests under way finish, and no new one starts.
func WithWaitBound(ctx, bound context.Context) context.Context {
	return context.WithValue(ctx, waitBoundKey{}, bound)
}

// wait waits on the limiter for one request, within the bound WithWaitBound set on ctx
// if any, and returns what to call once the request is over.
func (c *Client) wait(ctx context.Context) (done func(), err error) {
	if c.limiter == nil {
		return func() {}, nil
	}
	wctx := ctx
	if bound, ok := ctx.Value(waitBoundKey{}).(context.Context); ok {
		if err := bound.Err(); err != nil {
			return nil, err
		}
		var cancel context.CancelCauseFunc
		wctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer context.AfterFunc(bound, func() { cancel(bound.Err()) })()
	}
	if a, ok := c.limiter.(acquirer); ok {
		done, err = a.Acquire(wctx)
	} else {
		done, err = func() {}, c.limiter.Wait(wctx)
	}
	if err != nil && ctx.Err() == nil && context.Cause(wctx) != nil {
		err = context.Cause(wctx) // the bound ended, not ctx
	}
	return done, err
}

// NewClient returns a client for the OpenAPI at baseURL (for example
// "https://openapi.guance.com"; a trailing slash is tolerated, and "/api/v1" is appended
// unless baseURL already ends with it) using apiKey as DF-API-KEY.
func NewClient(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("parse guance base url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("guance base url %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("guance base url %q: host is missing", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("guance base url %q: must not carry user info, a query or a fragment", u.Redacted())
	}
	if apiKey == "" {
		return nil, errors.New("guance api key is empty")
	}
	if strings.ContainsAny(apiKey, "\r\n\x00") {
		return nil, errors.New("guance api key contains control characters")
	}
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	if !strings.HasSuffix(base, apiPrefix) {
		base += apiPrefix
	}

	c := &Client{
		baseURL: base,
		apiKey:  apiKey,
		hc:      &http.Client{Timeout: 30 * time.Second},
		limiter: NewWindowLimiter(18, time.Minute),
		logger:  slog.New(slog.DiscardHandler),
		now:     time.Now,
	}
	for _, opt := range opts {
		opt(c)
	}
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c, nil
}

// envelope is Guance's response wrapper:
// {code, content, pageInfo?, errorCode, message, success, traceId}.
type envelope struct {
	Code      flexInt         `json:"code"`
	Content   json.RawMessage `json:"content"`
	PageInfo  *PageInfo       `json:"pageInfo"`
	ErrorCode string          `json:"errorCode"`
	Message   string          `json:"message"`
	Success   *bool           `json:"success"`
	TraceID   flexString      `json:"traceId"`
}

// failed reports whether a decoded 2xx envelope still says the call failed.
func (e *envelope) failed() bool {
	if e.Success != nil && !*e.Success {
		return true
	}
	return e.Code != 0 && (e.Code < 200 || e.Code > 299)
}

// do sends one request to path (relative to /api/v1, e.g. "issue/list") and returns the
// decoded envelope. body, when not nil, is sent as JSON. It waits on the limiter first.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any) (*envelope, error) {
	apiPath := apiPrefix + "/" + path
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("guance: %s %s: encode request: %w", method, apiPath, err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.baseURL + "/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("guance: %s %s: build request: %w", method, apiPath, err)
	}
	req.Header.Set("DF-API-KEY", c.apiKey)
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	done, err := c.wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("guance: %s %s: wait for rate limiter: %w", method, apiPath, err)
	}
	defer done()

	start := c.now()
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The caller gave up; report that rather than the transport's view of it, so
			// that Retryable does not mistake it for a network failure.
			return nil, fmt.Errorf("guance: %s %s: %w", method, apiPath, ctxErr)
		}
		c.logger.Debug("guance request", "method", method, "path", apiPath, "err", err)
		return nil, fmt.Errorf("guance: %s %s: %w", method, apiPath, err)
	}
	defer drainClose(resp.Body)

	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	limit := int64(maxErrorBodySize)
	if ok {
		limit = maxBodySize
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("guance: %s %s: read response: %w", method, apiPath, err)
	}
	if int64(len(raw)) > limit && ok {
		return nil, fmt.Errorf("guance: %s %s: response body is larger than %d bytes", method, apiPath, limit)
	}

	var env envelope
	decodeErr := json.Unmarshal(raw, &env)
	c.logger.Debug("guance request", "method", method, "path", apiPath, "status", resp.StatusCode,
		"trace_id", c.redact(string(env.TraceID)), "duration", c.now().Sub(start))

	switch {
	case !ok:
		return nil, c.apiError(method, apiPath, resp.StatusCode, &env, decodeErr == nil)
	case decodeErr != nil:
		return nil, fmt.Errorf("guance: %s %s: decode response: %w", method, apiPath, decodeErr)
	case env.failed():
		status := resp.StatusCode
		if env.Code != 0 && (env.Code < 200 || env.Code > 299) {
			status = int(env.Code)
		}
		return nil, c.apiError(method, apiPath, status, &env, true)
	}
	return &env, nil
}

// apiError builds the typed error for a failed call, and penalizes the limiter when the
// failure is a throttle. decoded says whether env holds the body's envelope; a body that
// is not an envelope is dropped, since it may echo anything, the request headers included.
func (c *Client) apiError(method, apiPath string, status int, env *envelope, decoded bool) *Error {
	e := &Error{Method: method, Path: apiPath, StatusCode: status}
	if decoded {
		e.Code = c.redact(env.ErrorCode)
		e.Message = c.redact(env.Message)
		e.TraceID = c.redact(string(env.TraceID))
	}
	if e.Message == "" {
		e.Message = strings.ToLower(http.StatusText(status))
	}
	if e.throttled() {
		penalty := throttlePenalty
		if w, ok := c.limiter.(interface{ Window() time.Duration }); ok && w.Window() > 0 {
			penalty = w.Window() // the server's window, as the limiter is configured to mirror it
		}
		until := c.now().Add(penalty)
		if p, ok := c.limiter.(penalizer); ok {
			p.Penalize(until)
		}
		if c.onThrottle != nil {
			c.onThrottle()
		}
		c.logger.Warn("guance throttled the api key", "method", method, "path", apiPath,
			"status", status, "error_code", e.Code, "trace_id", e.TraceID, "backoff_until", until)
	}
	return e
}

// redact removes the API key from text taken from a response body.
func (c *Client) redact(s string) string {
	if c.apiKey == "" || !strings.Contains(s, c.apiKey) {
		return s
	}
	return strings.ReplaceAll(s, c.apiKey, "[redacted]")
}

// decodeContent decodes env.Content into out. A missing or null content leaves out alone
// and reports false.
func decodeContent(env *envelope, out any) (bool, error) {
	if isNull(env.Content) {
		return false, nil
	}
	if err := json.Unmarshal(env.Content, out); err != nil {
		return false, fmt.Errorf("decode content: %w", err)
	}
	return true, nil
}

// drainClose reads what is left of a body (up to a bound) so the connection can be
// reused, and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBodySize))
	_ = body.Close()
}

// isNull reports whether raw is absent or the JSON null.
func isNull(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || bytes.Equal(s, []byte("null"))
}

// pathEscape escapes one path segment (an issue uuid) and refuses an empty one.
func pathEscape(what, s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s is empty", what)
	}
	return url.PathEscape(s), nil
}
