package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"issuebot/guance"
	"issuebot/guance/guancetest"
	"issuebot/store"
)

// scanUntilDone runs scan steps until a scan reached what earlier ones read.
func scanUntilDone(t *testing.T, h *harness, b *Bot, issueUUID string) (steps int) {
	t.Helper()
	for steps = 1; steps <= 20; steps++ {
		if err := b.scanReplies(t.Context(), h.record(issueUUID)); err != nil {
			t.Fatal(err)
		}
		if h.record(issueUUID).ScanResume == 0 {
			return steps
		}
	}
	t.Fatalf("the scan of %s did not finish in 20 steps", issueUUID)
	return steps
}

// queuedReplies returns the texts of the thread jobs of an issue.
func queuedReplies(t *testing.T, h *harness) map[string]bool {
	t.Helper()
	jobs, err := h.st.DueJobs(t.Context(), queueThread, time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, j := range jobs {
		var p threadJob
		if err := json.Unmarshal(j.Payload, &p); err != nil {
			t.Fatal(err)
		}
		out[p.Text] = true
	}
	return out
}

// TestScanReachesEveryReply: more replies than a step reads, on a new card and between
// two scans, are all queued; the scan goes on over several steps, and the issue's
// thread posts wait until it is through.
func TestScanReachesEveryReply(t *testing.T) {
	h, _, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "chatty"}).UUID
	// The issue's posts are held before the first reply of an unfinished scan is queued.
	var unheld atomic.Int64
	cs := &countingStore{Store: h.st}
	cs.onPut = func(queue string) {
		if rec, err := h.st.GetIssue(t.Context(), issue); queue == queueThread && (err != nil || rec.ScanResume == 0) &&
			rec.LastReplyAt == 0 {
			unheld.Add(1)
		}
	}
	b := New(h.cfg, h.fc, h.gc, cs, nil, h.logger())
	carded(t, h, issue, time.Now())
	const burst = scanPageSize*scanMaxPages + 30 // beyond one step
	for i := range burst {
		h.gs.AddHumanReply(issue, "王五", fmt.Sprintf("first %03d", i))
	}
	// The first step does not get through: its replies wait for the rest.
	if err := b.scanReplies(t.Context(), h.record(issue)); err != nil {
		t.Fatal(err)
	}
	rec := h.record(issue)
	if rec.ScanResume == 0 || rec.LastReplyAt != 0 {
		t.Fatalf("after one step: resume page %d, watermark %d; want a scan in progress", rec.ScanResume, rec.LastReplyAt)
	}
	if n, err := h.st.CountJobs(t.Context(), queueThread); err != nil || n == 0 {
		t.Fatalf("queued: %d %v", n, err)
	}
	if err := b.thread.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(h.fs.Messages(testChat)); n != 0 {
		t.Errorf("%d messages posted while the scan was under way", n)
	}
	if steps := 1 + scanUntilDone(t, h, b, issue); steps < 2 {
		t.Errorf("%d steps", steps)
	}
	if n := unheld.Load(); n != 0 {
		t.Errorf("%d replies queued before the issue's posts were held", n)
	}
	got := queuedReplies(t, h)
	for i := range burst {
		if text := fmt.Sprintf("first %03d", i); !got[text] {
			t.Errorf("%q not queued", text)
		}
	}
	// Between two scans.
	for i := range burst {
		h.gs.AddHumanReply(issue, "王五", fmt.Sprintf("second %03d", i))
	}
	scanUntilDone(t, h, b, issue)
	got = queuedReplies(t, h)
	if len(got) != 2*burst {
		t.Errorf("%d replies queued, want %d", len(got), 2*burst)
	}
	// Nothing new: one page, nothing queued.
	before := len(h.gs.Requests())
	if steps := scanUntilDone(t, h, b, issue); steps != 1 || len(h.gs.Requests())-before != 1 {
		t.Errorf("a scan with nothing new took %d steps and %d requests", steps, len(h.gs.Requests())-before)
	}
}

// TestRepliesBeforeALateCardArePosted: replies written between the issue's creation and
// a card sent late (Feishu was down for half an hour) reach the thread; nothing older
// than the issue is read.
func TestRepliesBeforeALateCardArePosted(t *testing.T) {
	h, b, offset := scanHarness(t)
	offset.Store(int64(-40 * time.Minute))
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "late card"}).UUID
	offset.Store(int64(-38 * time.Minute))
	h.gs.AddHumanReply(issue, "王五", "written before the card")
	offset.Store(0)
	carded(t, h, issue, time.Now())
	scanUntilDone(t, h, b, issue)
	if got := queuedReplies(t, h); !got["written before the card"] || len(got) != 1 {
		t.Errorf("queued %v, want the reply written before the card", got)
	}
	if rec := h.record(issue); rec.Refresh {
		t.Error("the issue's own creation entry flagged it to be read again")
	}
}

// TestLateVisibleReplyIsRead: a reply that becomes visible after a scan read a newer
// one (its createAt is older than the watermark, within scanSlack) is still queued.
func TestLateVisibleReplyIsRead(t *testing.T) {
	h, b, offset := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "late row"}).UUID
	carded(t, h, issue, time.Now())
	h.gs.AddHumanReply(issue, "王五", "newer")
	scanUntilDone(t, h, b, issue)
	offset.Store(int64(-20 * time.Second))
	h.gs.AddHumanReply(issue, "王五", "stamped earlier, visible later")
	offset.Store(0)
	scanUntilDone(t, h, b, issue)
	if got := queuedReplies(t, h); !got["stamped earlier, visible later"] || !got["newer"] {
		t.Errorf("queued %v", got)
	}
}

// TestClaimedThreadPostIsLeftAlone: a thread post another worker of the same term holds
// is left alone, not spun on.
func TestClaimedThreadPostIsLeftAlone(t *testing.T) {
	h := newHarness(t, "redis", 18, time.Second)
	cs := &countingStore{Store: h.st}
	h.st = cs
	h.start()
	h.bootstrapped()
	issue, _ := h.cardedIssue("claimed post")
	payload, err := json.Marshal(threadJob{IssueUUID: issue, ReplyUUID: "reply_claimed", Author: "王五",
		CreateAt: time.Now().Unix(), Text: "held by another worker"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.st.ClaimWork(t.Context(), leasePoller, queueThread+":reply_claimed", h.bot.term.Load(), time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if err := h.st.PutJob(t.Context(), queueThread, store.Job{ID: "reply_claimed", Payload: payload, NotBefore: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.bot.thread.Wake()
	start := cs.threadReads.Load()
	deadline := time.Now().Add(2 * time.Second)
	waitFor(t, 10*time.Second, "two seconds", func() bool { return time.Now().After(deadline) })
	if n := cs.threadReads.Load() - start; n > 10 {
		t.Errorf("the thread queue was read %d times in 2 s while its only job was claimed elsewhere", n)
	}
	if n, err := h.st.CountJobs(t.Context(), queueThread); err != nil || n != 1 {
		t.Errorf("%d thread jobs (%v), want the claimed one kept", n, err)
	}
}

// TestDeadLeadersClaimDoesNotHoldThePost: a claim taken in an earlier lease term (by a
// process killed while posting) does not hold its job: the next term posts it at once,
// not after the claim's timeout.
func TestDeadLeadersClaimDoesNotHoldThePost(t *testing.T) {
	for _, kind := range []string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, kind, 18, time.Second)
			h.cfg.InstanceID = "replica-1"
			// The dead predecessor: the same instance, an older incarnation, term n.
			dead, err := h.st.AcquireLease(t.Context(), leasePoller, store.Holder{Instance: "replica-1", Incarnation: "0"}, time.Hour)
			if err != nil || dead == 0 {
				t.Fatalf("take the lease as the dead process: %d, %v", dead, err)
			}
			// It claimed the post and died with the claim held.
			if ok, err := h.st.ClaimWork(t.Context(), leasePoller, queueThread+":reply_orphaned", dead, time.Hour); err != nil || !ok {
				t.Fatalf("claim as the dead process: %v %v", ok, err)
			}
			h.start()
			h.bootstrapped()
			if got := h.bot.term.Load(); got <= dead {
				t.Fatalf("the restarted process leads in term %d, want above the dead one's %d", got, dead)
			}
			issue, msg := h.cardedIssue("post of a dead leader")
			payload, err := json.Marshal(threadJob{IssueUUID: issue, ReplyUUID: "reply_orphaned", Author: "王五",
				CreateAt: time.Now().Unix(), Text: "claimed by a dead leader"})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.st.PutJob(t.Context(), queueThread, store.Job{ID: "reply_orphaned", Payload: payload, NotBefore: time.Now()}); err != nil {
				t.Fatal(err)
			}
			h.bot.thread.Wake()
			waitFor(t, 10*time.Second, "the dead leader's post in the thread", func() bool {
				for _, m := range h.fs.Messages(testChat) {
					if m.RootID == msg && strings.Contains(m.Content, "claimed by a dead leader") {
						return true
					}
				}
				return false
			})
		})
	}
}

// passHeld steps the held queue once, as its worker would.
func passHeld(t *testing.T, b *Bot) {
	t.Helper()
	if err := b.held.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// holdReply puts a reply written with an API key into the held queue.
func holdReply(t *testing.T, h *harness, id, creator string, age time.Duration) {
	t.Helper()
	payload, err := json.Marshal(threadJob{IssueUUID: "issue_1", ReplyUUID: id, Creator: creator,
		CreateAt: time.Now().Add(-age).Unix(), Text: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.PutJob(t.Context(), queueHeld, store.Job{ID: id, Payload: payload, NotBefore: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// TestHeldReplyRelease: a reply held while the bot does not know its key's id is
// released once another replica has learnt the id (it is kept in the store), or, with
// no id, once it has waited heldMaxWait while no reply of the bot's is in flight — but
// never a reply the bot recorded as its own.
func TestHeldReplyRelease(t *testing.T) {
	t.Run("another replica learnt the key", func(t *testing.T) {
		h, b, _ := scanHarness(t)
		holdReply(t, h, "young", "wsak_other", 0)
		passHeld(t, b)
		if got := queuedReplies(t, h); len(got) != 0 {
			t.Fatalf("released %v before the key was known", got)
		}
		if err := h.st.SetMeta(t.Context(), metaKeyAccount, "wsak_bot"); err != nil {
			t.Fatal(err)
		}
		passHeld(t, b)
		if got := queuedReplies(t, h); len(got) != 1 || !got["young"] {
			t.Errorf("released %v, want the other key's reply", got)
		}
	})
	t.Run("waited long enough", func(t *testing.T) {
		h, b, _ := scanHarness(t)
		waitLimit := heldMaxWait / time.Minute * h.cfg.BudgetWindow
		holdReply(t, h, "young", "wsak_other", 0)
		holdReply(t, h, "old", "wsak_other", waitLimit+2*time.Second)
		// The bot's own reply, whose answer (and so the key's id) was lost.
		holdReply(t, h, "own", "wsak_bot", waitLimit+2*time.Second)
		if err := h.st.AddOwnReply(t.Context(), "issue_1", "own"); err != nil {
			t.Fatal(err)
		}
		// A reply of the bot's in flight: nothing is released.
		if err := h.st.PutJob(t.Context(), queueReplies, store.Job{ID: "om_inflight", Payload: []byte(`{}`),
			NotBefore: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		passHeld(t, b)
		if got := queuedReplies(t, h); len(got) != 0 {
			t.Fatalf("released %v while a reply of the bot's was in flight", got)
		}
		if err := h.st.DeleteJob(t.Context(), queueReplies, "om_inflight"); err != nil {
			t.Fatal(err)
		}
		passHeld(t, b)
		if got := queuedReplies(t, h); !got["old"] || got["own"] {
			t.Fatalf("released %v, want the old one (and not the bot's own)", got)
		}
		if k := b.keyID.Load(); k == nil || *k != "wsak_bot" {
			t.Errorf("the key's id was not learnt from the bot's own held reply")
		}
		// The key is known now: the young one is another key's, and goes too.
		passHeld(t, b)
		if got := queuedReplies(t, h); len(got) != 2 || !got["young"] || got["own"] {
			t.Errorf("released %v, want old and young", got)
		}
		if n, err := h.st.CountJobs(t.Context(), queueHeld); err != nil || n != 0 {
			t.Errorf("%d still held (%v)", n, err)
		}
	})
}

// TestUnfinishedScanOfAGoneIssue: an issue deleted in the middle of a scan of several
// steps does not hold its queued replies forever; a resolved one stays watched until
// its scan is through.
func TestUnfinishedScanOfAGoneIssue(t *testing.T) {
	h, b, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "going"}).UUID
	carded(t, h, issue, time.Now())
	for i := range scanPageSize*scanMaxPages + 5 {
		h.gs.AddHumanReply(issue, "王五", fmt.Sprintf("r%03d", i))
	}
	if err := b.scanReplies(t.Context(), h.record(issue)); err != nil {
		t.Fatal(err)
	}
	rec := h.record(issue)
	rec.StatusType = int(guance.StatusResolved)
	if rec.ScanResume == 0 || !b.watchedIssue(rec.Summary(), time.Now().Add(365*24*time.Hour)) {
		t.Errorf("resume page %d: a resolved, quiet issue with a scan to finish is not watched", rec.ScanResume)
	}
	// Deleted in Guance (a re-read answered 404).
	if err := b.markGone(t.Context(), issue); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(issue); !rec.Gone || rec.ScanResume != 0 {
		t.Errorf("gone %v, resume page %d; want no scan in progress", rec.Gone, rec.ScanResume)
	}
}

// TestPostedReplyIsNotPostedAgain: a Guance reply queued again after it was posted and
// counted (a crash lost its seen mark, and Feishu's one-hour uuid window has passed)
// is not posted twice.
func TestPostedReplyIsNotPostedAgain(t *testing.T) {
	h, b, _ := scanHarness(t)
	issue := h.gs.AddIssue(guancetest.IssueSpec{Name: "posted"}).UUID
	carded(t, h, issue, time.Now())
	if _, err := h.st.Claim(t.Context(), syncedKey("guance:reply_posted"), store.Retention); err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(threadJob{IssueUUID: issue, ReplyUUID: "reply_posted", Author: "王五",
		CreateAt: time.Now().Add(-2 * time.Hour).Unix(), Text: "posted two hours ago"})
	if err != nil {
		t.Fatal(err)
	}
	job := store.Job{ID: "reply_posted", Payload: payload, NotBefore: time.Now()}
	if err := h.st.PutJob(t.Context(), queueThread, job); err != nil {
		t.Fatal(err)
	}
	if err := b.thread.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if msgs := h.fs.Messages(testChat); len(msgs) != 0 {
		t.Errorf("posted again: %v", msgs)
	}
	if n, err := h.st.CountJobs(t.Context(), queueThread); err != nil || n != 0 {
		t.Errorf("%d thread jobs left (%v)", n, err)
	}
}
