package feishu

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	larkcore "github.com/larksuite/oapi-sdk-go/v3/core"
)

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name       string
		err        *Error
		throttled  bool
		temporary  bool
		tokenBad   bool
		notInChat  bool
		patchEnded bool
	}{
		{"app rate limit 429", &Error{HTTPStatus: 429, Code: 99991400}, true, true, false, false, false},
		{"chat rate limit", &Error{HTTPStatus: 400, Code: 230020}, true, true, false, false, false},
		{"tenant rate limit", &Error{HTTPStatus: 400, Code: 11232}, true, true, false, false, false},
		{"server error", &Error{HTTPStatus: 500, Code: 1500}, false, true, false, false, false},
		{"bad gateway", &Error{HTTPStatus: 502}, false, true, false, false, false},
		{"token invalid", &Error{HTTPStatus: 400, Code: 99991663}, false, false, true, false, false},
		{"not in chat", &Error{HTTPStatus: 400, Code: 230002}, false, false, false, true, false},
		{"patch window", &Error{HTTPStatus: 400, Code: 230031}, false, false, false, false, true},
		{"bad request", &Error{HTTPStatus: 400, Code: 230001}, false, false, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.err
			if got := e.Throttled(); got != tt.throttled {
				t.Errorf("Throttled() = %v, want %v", got, tt.throttled)
			}
			if got := e.Temporary(); got != tt.temporary {
				t.Errorf("Temporary() = %v, want %v", got, tt.temporary)
			}
			if got := e.TokenInvalid(); got != tt.tokenBad {
				t.Errorf("TokenInvalid() = %v, want %v", got, tt.tokenBad)
			}
			if got := e.NotInChat(); got != tt.notInChat {
				t.Errorf("NotInChat() = %v, want %v", got, tt.notInChat)
			}
			if got := e.PatchWindowEnded(); got != tt.patchEnded {
				t.Errorf("PatchWindowEnded() = %v, want %v", got, tt.patchEnded)
			}
			wrapped := fmt.Errorf("send: %w", e)
			if got := Retryable(context.Background(), wrapped); got != tt.temporary {
				t.Errorf("Retryable(wrapped) = %v, want %v", got, tt.temporary)
			}
		})
	}
}

func TestRetryableTransportErrors(t *testing.T) {
	ctx := context.Background()
	for _, err := range []error{
		&statusError{status: 502},
		&statusError{status: 429},
		&larkcore.ClientTimeoutError{},
		&larkcore.ServerTimeoutError{},
		&larkcore.DialFailedError{},
		context.DeadlineExceeded, // a per-call timeout while the caller goes on
	} {
		if !Retryable(ctx, fmt.Errorf("op: %w", err)) {
			t.Errorf("Retryable(%T) = false, want true", err)
		}
	}
	if Retryable(ctx, &statusError{status: 404}) {
		t.Error("Retryable(404 non-JSON) = true, want false")
	}
	if Retryable(ctx, errors.New("invalid card")) {
		t.Error("Retryable(plain error) = true, want false")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if Retryable(cancelled, &Error{HTTPStatus: 500}) {
		t.Error("Retryable with a cancelled ctx = true, want false")
	}
}

func TestRetryAfterHeader(t *testing.T) {
	h := http.Header{}
	h.Set("x-ogw-ratelimit-reset", "3")
	e := apiError("send card", &larkcore.ApiResp{StatusCode: 429, Header: h}, 99991400, "request trigger frequency limit")
	if got, want := RetryAfter(fmt.Errorf("x: %w", e)), 3*time.Second; got != want {
		t.Errorf("RetryAfter = %v, want %v", got, want)
	}
	if got := RetryAfter(errors.New("other")); got != 0 {
		t.Errorf("RetryAfter(other) = %v, want 0", got)
	}
}
