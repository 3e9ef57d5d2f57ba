package bot

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"issuebot/store"
)

// Guance can wake the bot: a notification policy's "Webhook 自定义" target POSTs to
// /guance/webhook?token=… when issues are added or modified or replied to. The body is
// undocumented, so it is read as opaque text: every issue uuid in it is a hint. A hint
// for a carded issue moves it to the front of the watcher (its replies are read next,
// and a change entry among them has the issue read again); a hint for an unknown issue
// makes a new-issue poll due at once (one of the next two budget turns). Hints only
// reorder the work the budget pays for, and merge per issue (a flag on its record), so
// a flood of hooks costs no more requests; polling stays the source of truth.

// webhookMaxBody bounds one hook's body.
const webhookMaxBody = 1 << 20

// webhookMaxIssues bounds the issues one hook may name.
const webhookMaxIssues = 1000

// metaPollHint is the store's record (unix ms) of the last hook that named an issue
// the bot does not know: the next turn polls for new issues.
const metaPollHint = "webhook.pollHint"

// metaHintSeq changes with every hook that names an issue on a replica that does not
// lead (unix ns of its arrival): the leader's scheduler watches it to begin its next
// turn early (see waitTurn).
const metaHintSeq = "webhook.hintSeq"

// issueRef finds Guance issue uuids in any text.
var issueRef = regexp.MustCompile(`issue_[A-Za-z0-9]{6,64}`)

// GuanceWebhook serves Guance's notification webhook; token is GUANCE_WEBHOOK_TOKEN,
// given as ?token= or as "Authorization: Bearer <token>". A missing or wrong token is
// refused (401) before the body is read, and costs nothing.
func (b *Bot) GuanceWebhook(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.URL.Query().Get("token")
		if h := r.Header.Get("Authorization"); got == "" && strings.HasPrefix(h, "Bearer ") {
			got = strings.TrimPrefix(h, "Bearer ") // for proxies that keep query strings in their logs
		}
		if token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			b.metrics.hooks.WithLabelValues("refused").Inc()
			writeHookAnswer(w, http.StatusUnauthorized, map[string]any{"error": "missing or wrong token"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, webhookMaxBody))
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			b.metrics.hooks.WithLabelValues("too_large").Inc()
			writeHookAnswer(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "body over 1 MB"})
			return
		}
		if err != nil {
			writeHookAnswer(w, http.StatusBadRequest, map[string]any{"error": "unreadable body"})
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		hinted, unknown, err := b.hint(ctx, issueRefs(body))
		if err != nil {
			b.logger.Warn("take a Guance webhook", "err", err)
			b.metrics.hooks.WithLabelValues("error").Inc()
			writeHookAnswer(w, http.StatusServiceUnavailable, map[string]any{"error": "the store is unreachable"})
			return
		}
		b.metrics.hooks.WithLabelValues("ok").Inc()
		b.logger.Debug("Guance webhook taken", "bytes", len(body), "hinted", hinted, "unknown", unknown)
		writeHookAnswer(w, http.StatusAccepted, map[string]any{"hinted": hinted, "unknown": unknown})
	})
}

// issueRefs returns the distinct issue uuids in a hook's body.
func issueRefs(body []byte) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range issueRef.FindAll(body, -1) {
		if id := string(m); !seen[id] && len(out) < webhookMaxIssues {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// hint flags the carded issues among uuids for the watcher and asks for a poll if any
// is unknown. It reports how many of each it saw.
func (b *Bot) hint(ctx context.Context, uuids []string) (hinted, unknown int, err error) {
	for _, id := range uuids {
		now := b.now()
		_, _, err := b.updateIssue(ctx, id, func(r *store.Issue) error {
			// One scan serves every hint before it; a later hook must change the flag
			// (a scan clears it only if unchanged), even from a replica whose clock is behind.
			r.HintedAt = latest(now, r.HintedAt.Add(time.Millisecond))
			return nil
		})
		switch {
		case errors.Is(err, store.ErrNotFound):
			unknown++
			continue
		case err != nil:
			return hinted, unknown, err
		}
		hinted++
	}
	if unknown > 0 {
		if err := b.state.SetMeta(ctx, metaPollHint, strconv.FormatInt(b.now().UnixMilli(), 10)); err != nil {
			return hinted, unknown, err
		}
	}
	if hinted > 0 { // (an unknown issue's poll is asked for above)
		if b.cfg.SharedHints && b.term.Load() == 0 { // the leader needs no telling
			if err := b.state.SetMeta(ctx, metaHintSeq, strconv.FormatInt(b.now().UnixNano(), 10)); err != nil {
				return hinted, unknown, err
			}
		}
		b.watch.hintCame(b.now())
		select {
		case b.hintWake <- struct{}{}:
		default:
		}
	}
	b.metrics.hints.Add(float64(hinted + unknown))
	return hinted, unknown, nil
}

// pollHint returns when a hook last asked for a poll (the zero time: never).
func (b *Bot) pollHint(ctx context.Context) time.Time {
	v, err := b.state.Meta(ctx, metaPollHint)
	if err != nil || v == "" {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func writeHookAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
