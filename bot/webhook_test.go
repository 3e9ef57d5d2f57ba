package bot

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"issuebot/guance/guancetest"
	"issuebot/store"
)

const hookToken = "hook-token-SECRET-0123456789"

// hookServer serves the running bot's webhook.
func (h *harness) hookServer() *httptest.Server {
	srv := httptest.NewServer(h.bot.GuanceWebhook(hookToken))
	h.t.Cleanup(srv.Close)
	return srv
}

func postHook(t testing.TB, srv *httptest.Server, token, body string) int {
	t.Helper()
	u := srv.URL + "/guance/webhook"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// hookedIssue is a harness whose bot (not running) serves the webhook, with one carded
// issue.
func hookedIssue(t *testing.T) (*harness, *httptest.Server, guancetest.Issue) {
	t.Helper()
	h, b, _ := scanHarness(t)
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: "hinted"})
	carded(t, h, is.UUID, time.Now())
	h.bot = b
	return h, h.hookServer(), is
}

// TestWebhookRefusesBadTokensAndBigBodies: a missing or wrong token is refused with 401
// and costs no Guance request (nor a store write); a body over 1 MB is refused with 413.
func TestWebhookRefusesBadTokensAndBigBodies(t *testing.T) {
	h, srv, is := hookedIssue(t)
	before := len(h.gs.Requests())
	for _, tok := range []string{"", "wrong", hookToken + "x", strings.ToUpper(hookToken)} {
		if got := postHook(t, srv, tok, is.UUID); got != http.StatusUnauthorized {
			t.Errorf("token %q answered %d, want 401", tok, got)
		}
	}
	if rec := h.record(is.UUID); !rec.HintedAt.IsZero() {
		t.Error("a refused hook flagged the issue")
	}
	if got := postHook(t, srv, hookToken, strings.Repeat("x", webhookMaxBody+1)); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over 1 MB answered %d, want 413", got)
	}
	if n := len(h.gs.Requests()) - before; n != 0 {
		t.Errorf("refused hooks cost %d Guance requests", n)
	}
	if got := postHook(t, srv, hookToken, `{"issue":"`+is.UUID+`"}`); got != http.StatusAccepted {
		t.Errorf("a good hook answered %d, want 202", got)
	}
	if h.record(is.UUID).HintedAt.IsZero() {
		t.Error("a good hook did not flag the issue")
	}
}

// TestWebhookOpaqueBodies: every issue uuid in any body shape is taken.
func TestWebhookOpaqueBodies(t *testing.T) {
	for name, body := range map[string]string{
		"json":  `{"event":{"type":"issue.modify","data":{"issue":{"uuid":"issue_aaaaaaaa"}}},"x":["issue_bbbbbbbb"]}`,
		"text":  "新回复 on issue_aaaaaaaa; see https://console.guance.com/…&__docid=issue_bbbbbbbb",
		"form":  "uuid=issue_aaaaaaaa&other=issue_bbbbbbbb&issue_aaaaaaaa=dup",
		"other": "<xml><id>issue_aaaaaaaa</id></xml> issue_bbbbbbbb",
	} {
		got := issueRefs([]byte(body))
		if len(got) != 2 || got[0] != "issue_aaaaaaaa" || got[1] != "issue_bbbbbbbb" {
			t.Errorf("%s: issueRefs = %v", name, got)
		}
	}
	if got := issueRefs([]byte("nothing here, issue_ alone, issue_abc")); len(got) != 0 {
		t.Errorf("issueRefs of a body without uuids = %v", got)
	}
}

// TestWebhookTakesAnyBody: through the handler, a body of any shape (or none of the
// bot's issues) is answered 202 with what it hinted, a token may come as a Bearer
// header, and a body naming more than webhookMaxIssues issues is cut there.
func TestWebhookTakesAnyBody(t *testing.T) {
	_, srv, is := hookedIssue(t)
	post := func(header, query, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/guance/webhook"+query, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(out))
	}
	for _, tt := range []struct {
		name, header, query, body string
		code                      int
		answer                    string
	}{
		{"empty body", "", "?token=" + hookToken, "", 202, `{"hinted":0,"unknown":0}`},
		{"binary, no uuid", "", "?token=" + hookToken, "\x00\xff{[<", 202, `{"hinted":0,"unknown":0}`},
		{"bearer header", "Bearer " + hookToken, "", "see " + is.UUID, 202, `{"hinted":1,"unknown":0}`},
		{"wrong bearer", "Bearer nope", "", is.UUID, 401, `{"error":"missing or wrong token"}`},
		{"known and unknown", "", "?token=" + hookToken, is.UUID + " issue_unknown0001", 202, `{"hinted":1,"unknown":1}`},
	} {
		if code, answer := post(tt.header, tt.query, tt.body); code != tt.code || answer != tt.answer {
			t.Errorf("%s: answered %d %s, want %d %s", tt.name, code, answer, tt.code, tt.answer)
		}
	}
	var many strings.Builder
	for i := range webhookMaxIssues + 50 {
		fmt.Fprintf(&many, "issue_many%06d ", i)
	}
	if code, answer := post("", "?token="+hookToken, many.String()); code != 202 || answer != fmt.Sprintf(`{"hinted":0,"unknown":%d}`, webhookMaxIssues) {
		t.Errorf("a hook naming %d issues answered %d %s, want %d unknown", webhookMaxIssues+50, code, answer, webhookMaxIssues)
	}
}

// TestWebhookHintedReplyIsReadNext: with 60 carded issues sharing the watcher, a hook
// naming the issue a Guance reply was written on makes its reply scan the watcher's
// next request (no round robin), and a hook naming an unknown issue makes the next
// turn a new-issue poll although POLL_INTERVAL is an hour away.
func TestWebhookHintedReplyIsReadNext(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	h.cfg.PollInterval = time.Hour
	var issues []string
	for i := range 60 {
		is := h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("carded %d", i), CreateAt: time.Now().Add(-2 * time.Hour)})
		carded(t, h, is.UUID, time.Now().Add(-time.Hour))
		issues = append(issues, is.UUID)
	}
	h.start()
	h.bootstrapped()
	srv := h.hookServer()
	target := issues[37]
	// Let every issue be scanned once, so the round robin has no favourite.
	waitFor(t, 60*time.Second, "a first scan of every issue", func() bool {
		for _, id := range issues {
			if h.record(id).RepliesScannedAt.IsZero() {
				return false
			}
		}
		return true
	})
	h.gs.AddHumanReply(target, "李四", "hinted reply")
	hinted := time.Now()
	if got := postHook(t, srv, hookToken, `{"issueUUID":"`+target+`","type":"issueReply.add"}`); got != http.StatusAccepted {
		t.Fatalf("hook answered %d", got)
	}
	waitFor(t, 20*time.Second, "the hinted reply in the chat", func() bool {
		for _, m := range h.fs.Messages(testChat) {
			if strings.Contains(m.Content, "hinted reply") {
				return true
			}
		}
		return false
	})
	n := 0
	for _, q := range h.gs.Requests() {
		if q.Time.After(hinted) && strings.Contains(q.Path, "/reply/") {
			n++
			if !strings.Contains(q.Path, target) {
				t.Errorf("the watcher read %s before the hinted issue", q.Path)
			}
			break
		}
	}
	if n == 0 {
		t.Error("no reply scan after the hint")
	}

	// An unknown issue: the next turn polls.
	fresh := h.gs.AddIssue(guancetest.IssueSpec{Name: "named by a hook"})
	if got := postHook(t, srv, hookToken, "issue.add "+fresh.UUID); got != http.StatusAccepted {
		t.Fatalf("hook answered %d", got)
	}
	waitFor(t, 20*time.Second, "the card of the hooked new issue", func() bool { return h.cardsFor(fresh.UUID) == 1 })
}

// TestWebhookFloodStaysWithinBudget: 2 000 hooks in a burst naming 150 carded issues
// cost no more Guance requests than the budget allows, and Guance never throttles.
func TestWebhookFloodStaysWithinBudget(t *testing.T) {
	h := newHarness(t, "embedded", 18, time.Second)
	var issues []string
	for i := range 150 {
		is := h.gs.AddIssue(guancetest.IssueSpec{Name: fmt.Sprintf("flooded %d", i), CreateAt: time.Now().Add(-2 * time.Hour)})
		carded(t, h, is.UUID, time.Now().Add(-time.Hour))
		issues = append(issues, is.UUID)
	}
	h.start()
	h.bootstrapped()
	srv := h.hookServer()
	before := requestKinds(h.gs.Requests())["reply/list"]
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				body := fmt.Sprintf(`{"issue":"%s","also":"%s"}`, issues[(w*250+i)%150], issues[(w+i)%150])
				if got := postHook(t, srv, hookToken, body); got != http.StatusAccepted {
					t.Errorf("hook answered %d", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 60*time.Second, "every hint served", func() bool {
		recs, err := h.st.ListIssues(context.Background())
		if err != nil {
			return false
		}
		for _, r := range recs {
			if !r.HintedAt.IsZero() {
				return false
			}
		}
		return true
	})
	if max := h.gs.MaxInWindow(time.Second); max > h.limit || h.gs.Throttled() > 0 {
		t.Errorf("the flood made %d requests in one window (GUANCE_RATE_LIMIT %d) and %d throttles", max, h.limit, h.gs.Throttled())
	}
	// 2 000 hooks naming 4 000 issues, 150 distinct: merged per issue, about one scan
	// each (an issue scanned while the hooks still come may be hinted once more).
	scans := requestKinds(h.gs.Requests())["reply/list"] - before
	t.Logf("2 000 hooks for %d issues: %d reply scans", len(issues), scans)
	if scans > 2*len(issues) {
		t.Errorf("the flood cost %d reply scans for %d issues, want hints merged per issue (at most %d)", scans, len(issues), 2*len(issues))
	}
}

// TestHintDuringAScanIsKept: a hook that arrives while the issue's replies are being
// read stays for the next scan; the hints before it are served.
func TestHintDuringAScanIsKept(t *testing.T) {
	h, b, _ := scanHarness(t)
	is := h.gs.AddIssue(guancetest.IssueSpec{Name: "hinted twice"})
	carded(t, h, is.UUID, time.Now())
	first := time.Now().Add(-time.Second)
	if _, err := h.st.UpdateIssue(t.Context(), is.UUID, func(r *store.Issue) error { r.HintedAt = first; return nil }); err != nil {
		t.Fatal(err)
	}
	atScan := h.record(is.UUID)                                          // what the watcher read when it chose the issue
	if _, _, err := b.hint(t.Context(), []string{is.UUID}); err != nil { // a hook during the scan
		t.Fatal(err)
	}
	if err := b.scanReplies(t.Context(), atScan); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(is.UUID); !rec.HintedAt.After(first) {
		t.Errorf("the hint that came during the scan was lost (HintedAt %v)", rec.HintedAt)
	}
	if err := b.scanReplies(t.Context(), h.record(is.UUID)); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(is.UUID); !rec.HintedAt.IsZero() {
		t.Errorf("a scan did not serve the hints before it (HintedAt %v)", rec.HintedAt)
	}

	// The same from a replica whose clock is a minute behind the one that took the first.
	if _, err := h.st.UpdateIssue(t.Context(), is.UUID, func(r *store.Issue) error { r.HintedAt = time.Now(); return nil }); err != nil {
		t.Fatal(err)
	}
	atScan = h.record(is.UUID)
	behind := New(h.cfg, h.fc, h.gc, h.st, nil, nil)
	behind.now = func() time.Time { return time.Now().Add(-time.Minute) }
	if _, _, err := behind.hint(t.Context(), []string{is.UUID}); err != nil {
		t.Fatal(err)
	}
	if err := b.scanReplies(t.Context(), atScan); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(is.UUID); rec.HintedAt.IsZero() {
		t.Error("the hint from a replica whose clock is behind, during the scan, was lost")
	}
}
