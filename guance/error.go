package guance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// Sentinels for errors.Is on errors returned by the Client. An *Error matches them
// through its Is method.
var (
	// ErrThrottled means Guance rate-limited the call: HTTP 401 (sic) with errorCode
	// ft.TriggerApiAkCurrentLimiting (per key) or ft.TriggerApiWorkspaceCurrentLimiting
	// (per workspace), or HTTP 429. It is temporary; it never also matches ErrBadKey.
	ErrThrottled = errors.New("guance: throttled")
	// ErrBadKey means Guance refused the API key: errorCode ft.InvalidAPIKey or
	// InvalidApiKey (HTTP 403), or an HTTP 401 that is not a throttle.
	ErrBadKey = errors.New("guance: invalid api key")
	// ErrNotFound means the object does not exist (or the key may not see it): HTTP 404
	// or envelope code 404.
	ErrNotFound = errors.New("guance: not found")
)

// Error is a call that Guance answered with a failure: a non-2xx HTTP status, or a 2xx
// whose envelope says success:false or carries a code other than 200.
type Error struct {
	// Method and Path name the call, e.g. "POST" and "/api/v1/issue/list". Path never
	// carries the query or the API key.
	Method, Path string
	// StatusCode is the HTTP status; for a 2xx answer whose envelope failed, it is the
	// envelope's code when that is not a 2xx (Guance mirrors the HTTP status there),
	// else the HTTP status.
	StatusCode int
	// Code is the envelope's errorCode, e.g. "ft.TriggerApiAkCurrentLimiting".
	Code string
	// Message is the envelope's message, or the HTTP status text when there is none.
	Message string
	// TraceID is the envelope's traceId; quote it to Guance support.
	TraceID string
}

// Error formats the failure as
// "guance: POST /api/v1/issue/list: 401 ft.TriggerApiAkCurrentLimiting: message (trace 123)".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "guance: %s %s: %d", e.Method, e.Path, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.TraceID != "" {
		b.WriteString(" (trace " + e.TraceID + ")")
	}
	return b.String()
}

// Is lets errors.Is match ErrThrottled, ErrBadKey and ErrNotFound.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrThrottled:
		return e.throttled()
	case ErrBadKey:
		return e.badKey()
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	}
	return false
}

// Temporary reports whether the same call may succeed later: throttling, a 5xx or a 408.
func (e *Error) Temporary() bool {
	return e.throttled() || e.StatusCode >= 500 || e.StatusCode == http.StatusRequestTimeout
}

// throttled reports whether Guance rate-limited the call. The errorCode decides first:
// Guance throttles with HTTP 401, which must not read as a bad key.
func (e *Error) throttled() bool {
	return strings.Contains(e.Code, "CurrentLimiting") || e.StatusCode == http.StatusTooManyRequests
}

// badKey reports whether Guance refused the API key.
func (e *Error) badKey() bool {
	if e.throttled() {
		return false
	}
	code := strings.TrimPrefix(e.Code, "ft.")
	return strings.EqualFold(code, "InvalidAPIKey") || e.StatusCode == http.StatusUnauthorized
}

// Retryable reports whether a call that failed with err may succeed if tried again
// later: a temporary *Error (throttled, 5xx, 408) or a transport failure (network error,
// timeout of the HTTP client, connection refused or reset, unexpected EOF). It is false
// when the caller's context ended, for a TLS certificate that does not verify, and for
// every other error.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Temporary()
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The HTTP client's own timeout also matches DeadlineExceeded; it comes wrapped in
		// a *url.Error. A deadline of the caller's context (reported bare by the Client)
		// is not worth retrying.
		_, ok := errors.AsType[*url.Error](err)
		return ok
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		// A certificate Guance's site does not match will not match on the next try either
		// (and *url.Error, a net.Error, would otherwise say "retry").
		return false
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
