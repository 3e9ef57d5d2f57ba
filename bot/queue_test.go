package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"issuebot/bot/feishu"
	"issuebot/guance"
)

// TestClassify: one retry policy for every queue. The bot's own failures (the store,
// rendering) are retried within seconds, not taken for a refusal by Feishu.
func TestClassify(t *testing.T) {
	b := New(Config{RetryBase: time.Second}, nil, nil, nil, nil, nil)
	ctx := t.Context()
	for _, tt := range []struct {
		name       string
		err        error
		min, max   time.Duration
		wantReason string
	}{
		{"store down", fmt.Errorf("record card om_1: %w", errors.New("dial tcp 127.0.0.1:6379: connection refused")), 0, 2 * time.Second, "internal"},
		{"render", fmt.Errorf("render card: %w", errors.New("json: unsupported value")), 0, 2 * time.Second, "internal"},
		{"feishu refuses", &feishu.Error{Op: "send card", HTTPStatus: 400, Code: 230002, Msg: "bot not in chat"}, refusedRetry, refusedRetry, "refused"},
		{"feishu throttles", &feishu.Error{Op: "send card", HTTPStatus: 429, Code: 99991400, RetryAfter: 7 * time.Second}, 7 * time.Second, 2 * time.Minute, "transient"},
		{"guance 503", fmt.Errorf("reply: %w", &guance.Error{StatusCode: http.StatusServiceUnavailable}), 0, 2 * time.Second, "transient"},
		{"guance throttles", fmt.Errorf("reply: %w", &guance.Error{StatusCode: 401, Code: "ft.TriggerApiAkCurrentLimiting"}), 0, 2 * time.Second, "throttled"},
		{"guance bad key", fmt.Errorf("reply: %w", &guance.Error{StatusCode: 403, Code: "ft.InvalidAPIKey"}), refusedRetry, refusedRetry, "refused"},
		{"a timeout", fmt.Errorf("send: %w", context.DeadlineExceeded), 0, 2 * time.Second, "transient"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, reason := b.classify(ctx, tt.err, 1)
			if reason != tt.wantReason || d < tt.min || d > tt.max {
				t.Errorf("classify = %v, %q; want %q within [%v, %v]", d, reason, tt.wantReason, tt.min, tt.max)
			}
		})
	}
	if d, _ := b.classify(ctx, errors.New("store"), 20); d > 3*retryMax/2 {
		t.Errorf("backoff after 20 attempts = %v, want at most %v (with jitter)", d, 3*retryMax/2)
	}
}
