package feishu

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
)

// Feishu codes the adapter treats specially. Sources: reference/feishu.md §7 and the
// Open Platform frequency-control guide.
const (
	codeRateLimited      = 99991400 // request trigger frequency limit (HTTP 429)
	codeChatRateLimited  = 230020   // per-chat / per-message frequency limit
	codeTenantRateLimit  = 11232    // tenant-level "create message service trigger rate limit"
	codeTokenInvalid     = 99991663 // tenant access token invalid
	codeAppTokenInvalid  = 99991664 // app access token invalid
	codeAccessTokenBad   = 99991671 // access token invalid
	codeNotInChat        = 230002   // the bot is not in the chat
	codePatchWindowEnded = 230031   // cards can be patched only within 14 days
	codeMessageGone      = 230011   // the message was recalled (or never existed)
)

// Error is a failed Feishu Open Platform call: either the body's code was not 0 (which
// the SDK returns with a nil error) or the HTTP exchange itself failed with a status.
// It never carries a token or the app secret.
type Error struct {
	// Op names what the adapter was doing, e.g. "send card".
	Op string
	// HTTPStatus is the HTTP status of the answer (0 when unknown).
	HTTPStatus int
	// Code and Msg are the body's code and msg.
	Code int
	Msg  string
	// LogID is Feishu's X-Tt-Logid, for support tickets.
	LogID string
	// RetryAfter is how long Feishu asked us to wait (x-ogw-ratelimit-reset), if it did.
	RetryAfter time.Duration
}

// Error implements error.
func (e *Error) Error() string {
	s := fmt.Sprintf("feishu: %s: code %d: %s", e.Op, e.Code, e.Msg)
	if e.HTTPStatus != 0 {
		s += fmt.Sprintf(" (http %d", e.HTTPStatus)
		if e.LogID != "" {
			s += ", log_id " + e.LogID
		}
		s += ")"
	} else if e.LogID != "" {
		s += " (log_id " + e.LogID + ")"
	}
	return s
}

// Throttled reports whether Feishu refused the call because of a frequency limit.
func (e *Error) Throttled() bool {
	switch e.Code {
	case codeRateLimited, codeChatRateLimited, codeTenantRateLimit:
		return true
	}
	return e.HTTPStatus == http.StatusTooManyRequests
}

// Temporary reports whether the same call may succeed later: frequency limits and
// server-side failures are temporary, validation and permission failures are not.
func (e *Error) Temporary() bool {
	return e.Throttled() || e.HTTPStatus >= 500 || e.HTTPStatus == http.StatusRequestTimeout
}

// TokenInvalid reports whether the access token used was refused.
func (e *Error) TokenInvalid() bool {
	switch e.Code {
	case codeTokenInvalid, codeAppTokenInvalid, codeAccessTokenBad:
		return true
	}
	return false
}

// NotInChat reports whether the bot is not (or no longer) a member of the target chat.
func (e *Error) NotInChat() bool { return e.Code == codeNotInChat }

// MessageGone reports whether the target message was recalled or deleted.
func (e *Error) MessageGone() bool { return e.Code == codeMessageGone }

// PatchWindowEnded reports whether the card is too old (14 days) to be patched.
func (e *Error) PatchWindowEnded() bool { return e.Code == codePatchWindowEnded }

// Retryable reports whether err, returned by this package, is worth retrying: a
// temporary *Error, or a transport failure while ctx is still alive.
func Retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// A per-call timeout while the caller's ctx is alive is worth a retry.
		return ctx.Err() == nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Temporary()
	}
	var cert *tls.CertificateVerificationError
	if errors.As(err, &cert) {
		return false // a certificate that does not verify will not start to
	}
	var (
		ne   net.Error
		ct   *larkcore.ClientTimeoutError
		st   *larkcore.ServerTimeoutError
		df   *larkcore.DialFailedError
		hs   *statusError
		oerr *net.OpError
	)
	switch {
	case errors.As(err, &hs):
		return hs.status >= 500 || hs.status == http.StatusTooManyRequests
	case errors.As(err, &ct), errors.As(err, &st), errors.As(err, &df):
		return true
	case errors.As(err, &ne), errors.As(err, &oerr):
		return true
	}
	return false
}

// RetryAfter returns how long Feishu asked the caller to wait before retrying err, or 0.
func RetryAfter(err error) time.Duration {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.RetryAfter
	}
	var hs *statusError
	if errors.As(err, &hs) {
		return hs.retryAfter
	}
	return 0
}

// apiError turns an SDK response whose code is not 0 into an *Error.
func apiError(op string, resp *larkcore.ApiResp, code int, msg string) *Error {
	e := &Error{Op: op, Code: code, Msg: msg}
	if resp != nil {
		e.HTTPStatus = resp.StatusCode
		e.LogID = resp.RequestId()
		e.RetryAfter = retryAfterHeader(resp.Header)
	}
	return e
}

// retryAfterHeader reads x-ogw-ratelimit-reset (seconds), falling back to Retry-After.
func retryAfterHeader(h http.Header) time.Duration {
	for _, k := range []string{"x-ogw-ratelimit-reset", "Retry-After"} {
		if v := h.Get(k); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

// statusError is returned by the adapter's HTTP transport for answers that are not
// JSON (a gateway's HTML 502, say), which the SDK could not decode at all.
type statusError struct {
	status     int
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	return fmt.Sprintf("http %d %s (not a JSON answer)", e.status, http.StatusText(e.status))
}
