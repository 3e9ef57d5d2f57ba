package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"issuebot/store"
)

// shortTTL is the TTL the suite lets expire. Redis honours millisecond TTLs, so waiting in real time stays
// fast; stores implementing Advancer skip the wait.
const shortTTL = 300 * time.Millisecond

// expiryDeadline bounds how long the suite waits in real time for a TTL to run out.
const expiryDeadline = 5 * time.Second

// Contract runs the behaviour every store.Store must have. open returns a fresh, empty store for one
// subtest; the subtests run in parallel. If the store implements Advancer, TTLs are expired by moving its
// clock, else by waiting; if it implements Reopener, persistence across Close is checked.
func Contract(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"KindAndPing", testKindAndPing},
		{"IssueRoundTrip", testIssueRoundTrip},
		{"IssueNotFound", testIssueNotFound},
		{"PutIssueRequiresUUID", testPutIssueRequiresUUID},
		{"AddCard", testAddCard},
		{"CardMoveKeepsOldIndex", testCardMove},
		{"ListAndDeleteIssues", testListAndDelete},
		{"Summaries", testSummaries},
		{"SeenIssues", testSeenIssues},
		{"Replies", testReplies},
		{"Claim", testClaim},
		{"ClaimExpires", testClaimExpires},
		{"ClaimConcurrent", testClaimConcurrent},
		{"Routes", testRoutes},
		{"Cursor", testCursor},
		{"Meta", testMeta},
		{"MetaFencedByLease", testMetaFenced},
		{"CursorConcurrent", testCursorConcurrent},
		{"Lease", testLease},
		{"LeaseExpires", testLeaseExpires},
		{"WorkClaim", testWorkClaim},
		{"DeleteJobIf", testDeleteJobIf},
		{"WorkClaimExpires", testWorkClaimExpires},
		{"WorkClaimFencedByLease", testWorkClaimFenced},
		{"Jobs", testJobs},
		{"IssueEveryFieldRoundTrip", testIssueEveryField},
		{"UpdateIssue", testUpdateIssue},
		{"UpdateIssueNotFound", testUpdateIssueNotFound},
		{"UpdateIssueFuncErrorAborts", testUpdateIssueFuncError},
		{"UpdateIssueKeepsUUID", testUpdateIssueKeepsUUID},
		{"UpdateIssueMapsNewIDs", testUpdateIssueMapsNewIDs},
		{"UpdateIssueConcurrent", testUpdateIssueConcurrent},
		{"RateSlotLimit", testRateSlotLimit},
		{"RateSlotWindowPasses", testRateSlotWindowPasses},
		{"RateSlotNamesIndependent", testRateSlotNames},
		{"RateSlotConcurrent", testRateSlotConcurrent},
		{"RateSlotInvalid", testRateSlotInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
	t.Run("SurvivesReopen", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		r, ok := s.(Reopener)
		if !ok {
			t.Skipf("%T does not implement storetest.Reopener", s)
		}
		testReopen(t, s, r)
	})
}

// waitExpired makes ttl pass for s and then waits until cond holds: at once for an Advancer, else by
// polling every 20ms until expiryDeadline.
func waitExpired(t *testing.T, s store.Store, ttl time.Duration, what string, cond func() bool) {
	t.Helper()
	if a, ok := s.(Advancer); ok {
		a.Advance(ttl + time.Millisecond)
		if !cond() {
			t.Fatalf("%s: still not expired after advancing the clock by %v", what, ttl)
		}
		return
	}
	deadline := time.NewTimer(ttl + expiryDeadline)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("%s: not expired %v after a TTL of %v", what, expiryDeadline, ttl)
		case <-tick.C:
		}
	}
}

// must fails the test on err.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// mustNotFound checks that err wraps store.ErrNotFound.
func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: err = %v, want store.ErrNotFound", what, err)
	}
}

// sampleIssue returns a record with every field set (testIssueEveryField checks that), so that round trips
// cover every field. Its Snapshot is compact JSON, as the stores return it.
func sampleIssue(uuid string) store.Issue {
	cst := time.FixedZone("CST", 8*3600)
	return store.Issue{
		IssueUUID: uuid,
		Cards: []store.Card{
			{ChatID: "oc_chat1", MessageID: "om_card_" + uuid, ThreadID: "omt_thread_" + uuid,
				SentAt: time.Date(2026, 1, 1, 8, 0, 0, 123456789, time.UTC), PatchedRevision: 2},
			{ChatID: "oc_chat2", MessageID: "om_card2_" + uuid, SentAt: time.Date(2026, 1, 1, 8, 0, 1, 0, cst), PatchedRevision: 3,
				Digest: "storm-1"},
		},
		CardRevision:     3,
		UpdateAt:         1767225600,
		StatusType:       10,
		Level:            "P1",
		Name:             "CPU 使用率过高 on db-1",
		SyncedReplies:    2,
		LastActivity:     time.Date(2026, 1, 2, 9, 30, 0, 0, cst),
		CreateAt:         1767222000,
		Snapshot:         json.RawMessage(`{"uuid":"` + uuid + `","name":"CPU 使用率过高 on db-1","level":"P1","tags":["db"]}`),
		RepliesScannedAt: time.Date(2026, 1, 2, 10, 0, 0, 987654321, time.UTC),
		ScannedUpdateAt:  1767225500,
		LastReplyAt:      1767225550,
		ScanResume:       3,
		ScanTop:          1767225590,
		Refresh:          true,
		HintedAt:         time.Date(2026, 1, 2, 11, 16, 0, 5, time.UTC),
		Gone:             true,
		ChangedBy:        "ou_user1",
		ChangedAction:    "resolve",
		ChangedAt:        time.Date(2026, 1, 2, 11, 15, 0, 42, cst),
		StatusSetAt:      time.Date(2026, 1, 2, 11, 15, 1, 7, time.UTC),
	}
}

// listed is what ListIssues returns of records: everything but their snapshots.
func listed(recs ...store.Issue) []store.Issue {
	out := make([]store.Issue, len(recs))
	for i, r := range recs {
		r.Snapshot = nil
		out[i] = r
	}
	return out
}

func testKindAndPing(t *testing.T, s store.Store) {
	if k := s.Kind(); k != "redis" && k != "embedded" {
		t.Errorf("Kind() = %q, want redis or embedded", k)
	}
	must(t, "Ping", s.Ping(t.Context()))
}

func testIssueRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, want))

	got, err := s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue mismatch (-want +got):\n%s", diff)
	}
	for _, id := range []string{want.Cards[0].MessageID, want.Cards[0].ThreadID, want.Cards[1].MessageID} {
		got, err := s.IssueByMessage(ctx, id)
		must(t, "IssueByMessage "+id, err)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("IssueByMessage(%q) mismatch (-want +got):\n%s", id, diff)
		}
	}
	seen, err := s.IssueSeen(ctx, want.IssueUUID)
	must(t, "IssueSeen", err)
	if !seen {
		t.Errorf("IssueSeen(%q) = false after PutIssue, want true", want.IssueUUID)
	}

	// Overwrite.
	want.StatusType, want.CardRevision = 20, 4
	must(t, "PutIssue again", s.PutIssue(ctx, want))
	got, err = s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue after overwrite mismatch (-want +got):\n%s", diff)
	}
}

func testIssueNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetIssue(ctx, "missing")
	mustNotFound(t, "GetIssue", err)
	_, err = s.IssueByMessage(ctx, "om_missing")
	mustNotFound(t, "IssueByMessage", err)
	mustNotFound(t, "DeleteRoute", s.DeleteRoute(ctx, "oc_x", "ch_x"))
	must(t, "DeleteIssue of a missing issue", s.DeleteIssue(ctx, "missing"))
}

func testPutIssueRequiresUUID(t *testing.T, s store.Store) {
	if err := s.PutIssue(t.Context(), store.Issue{Name: "no uuid"}); err == nil {
		t.Error("PutIssue without IssueUUID succeeded, want an error")
	}
}

func testAddCard(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := sampleIssue("issue-1")
	base.Cards = []store.Card{{ChatID: "oc_ignored", MessageID: "om_ignored"}}
	first := store.Card{ChatID: "oc_a", MessageID: "om_a", SentAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), PatchedRevision: 1}
	got, err := s.AddCard(ctx, base, first)
	must(t, "AddCard (new record)", err)
	want := base
	want.Cards = []store.Card{first}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddCard of a new record mismatch (-want +got):\n%s", diff)
	}
	_, err = s.IssueByMessage(ctx, "om_ignored")
	mustNotFound(t, "IssueByMessage of base's own card", err)
	seen, err := s.IssueSeen(ctx, base.IssueUUID)
	must(t, "IssueSeen", err)
	if !seen {
		t.Error("IssueSeen = false after AddCard, want true")
	}

	// A second chat's card joins the record; base is ignored once the record exists.
	other := base
	other.Name, other.CardRevision = "ignored", 99
	second := store.Card{ChatID: "oc_b", MessageID: "om_b", ThreadID: "omt_b"}
	got, err = s.AddCard(ctx, other, second)
	must(t, "AddCard (second chat)", err)
	want.Cards = append(want.Cards, second)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddCard of a second chat mismatch (-want +got):\n%s", diff)
	}
	for _, id := range []string{"om_a", "om_b", "omt_b"} {
		got, err := s.IssueByMessage(ctx, id)
		must(t, "IssueByMessage "+id, err)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("IssueByMessage(%q) mismatch (-want +got):\n%s", id, diff)
		}
	}

	// The same chat again replaces its card; the old message stays mapped.
	moved := store.Card{ChatID: "oc_a", MessageID: "om_a2"}
	got, err = s.AddCard(ctx, base, moved)
	must(t, "AddCard (same chat)", err)
	want.Cards[0] = moved
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddCard of the same chat mismatch (-want +got):\n%s", diff)
	}
	for _, id := range []string{"om_a", "om_a2"} {
		if _, err := s.IssueByMessage(ctx, id); err != nil {
			t.Errorf("IssueByMessage(%q) after the card moved: %v", id, err)
		}
	}

	// A storm digest's entry (no message of its own) keeps the chat's card; in a new chat it is added.
	entry := store.Card{ChatID: "oc_a", Digest: "storm-1"}
	got, err = s.AddCard(ctx, base, entry)
	must(t, "AddCard (digest entry over a card)", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("a digest entry replaced the chat's card (-want +got):\n%s", diff)
	}
	entry.ChatID = "oc_storm"
	got, err = s.AddCard(ctx, base, entry)
	must(t, "AddCard (digest entry, new chat)", err)
	want.Cards = append(want.Cards, entry)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddCard of a digest entry mismatch (-want +got):\n%s", diff)
	}
	again := store.Card{ChatID: "oc_storm", Digest: "storm-2"}
	got, err = s.AddCard(ctx, base, again)
	must(t, "AddCard (digest entry over a digest entry)", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("a second digest entry replaced the first (-want +got):\n%s", diff)
	}

	// Concurrent first cards of two chats both land in one record.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := store.Card{ChatID: fmt.Sprintf("oc_%d", i), MessageID: fmt.Sprintf("om_%d", i)}
			if _, err := s.AddCard(ctx, sampleIssue("issue-2"), c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent AddCard: %v", err)
	}
	rec, err := s.GetIssue(ctx, "issue-2")
	must(t, "GetIssue issue-2", err)
	if len(rec.Cards) != 8 {
		t.Errorf("after 8 concurrent AddCards of distinct chats the record has %d cards, want 8: %+v", len(rec.Cards), rec.Cards)
	}
}

func testCardMove(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, old))
	moved := old
	moved.Cards = []store.Card{{ChatID: "oc_chat1", MessageID: "om_new"}}
	moved.CardRevision = 1
	must(t, "PutIssue moved", s.PutIssue(ctx, moved))

	for _, id := range []string{old.Cards[0].MessageID, old.Cards[0].ThreadID, moved.Cards[0].MessageID} {
		got, err := s.IssueByMessage(ctx, id)
		must(t, "IssueByMessage "+id, err)
		if diff := cmp.Diff(moved, got); diff != "" {
			t.Errorf("IssueByMessage(%q) mismatch (-want +got):\n%s", id, diff)
		}
	}
}

func testListAndDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ListIssues(ctx)
	must(t, "ListIssues empty", err)
	if len(got) != 0 {
		t.Errorf("ListIssues on an empty store = %v, want none", got)
	}
	var want []store.Issue
	for _, u := range []string{"c", "a", "b"} {
		must(t, "PutIssue "+u, s.PutIssue(ctx, sampleIssue(u)))
	}
	for _, u := range []string{"a", "b", "c"} {
		want = append(want, sampleIssue(u))
	}
	got, err = s.ListIssues(ctx)
	must(t, "ListIssues", err)
	if diff := cmp.Diff(listed(want...), got); diff != "" {
		t.Errorf("ListIssues mismatch (-want +got):\n%s", diff)
	}
	// The snapshot is kept apart: GetIssue has it, and a record written without one loses it.
	full, err := s.GetIssue(ctx, "a")
	must(t, "GetIssue a", err)
	if string(full.Snapshot) != string(want[0].Snapshot) {
		t.Errorf("GetIssue snapshot = %s, want %s", full.Snapshot, want[0].Snapshot)
	}
	bare := sampleIssue("c")
	bare.Snapshot = nil
	must(t, "PutIssue without a snapshot", s.PutIssue(ctx, bare))
	if got, err := s.GetIssue(ctx, "c"); err != nil || got.Snapshot != nil {
		t.Errorf("GetIssue after a PutIssue without snapshot = %s, %v; want none", got.Snapshot, err)
	}
	must(t, "PutIssue c again", s.PutIssue(ctx, sampleIssue("c")))

	must(t, "DeleteIssue", s.DeleteIssue(ctx, "b"))
	_, err = s.GetIssue(ctx, "b")
	mustNotFound(t, "GetIssue after DeleteIssue", err)
	_, err = s.IssueByMessage(ctx, sampleIssue("b").Cards[0].MessageID)
	mustNotFound(t, "IssueByMessage after DeleteIssue", err)
	got, err = s.ListIssues(ctx)
	must(t, "ListIssues", err)
	if diff := cmp.Diff(listed(want[0], want[2]), got); diff != "" {
		t.Errorf("ListIssues after delete mismatch (-want +got):\n%s", diff)
	}
}

// testSummaries checks that ListSummaries follows every write of a record: put, update, a new card and
// delete.
func testSummaries(t *testing.T, s store.Store) {
	ctx := t.Context()
	check := func(what string, recs ...store.Issue) {
		t.Helper()
		got, err := s.ListSummaries(ctx)
		must(t, what+": ListSummaries", err)
		var want []store.Summary
		for _, r := range recs {
			want = append(want, r.Summary())
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: ListSummaries mismatch (-want +got):\n%s", what, diff)
		}
		for _, w := range want {
			one, err := s.GetSummary(ctx, w.IssueUUID)
			must(t, what+": GetSummary "+w.IssueUUID, err)
			if diff := cmp.Diff(w, one); diff != "" {
				t.Errorf("%s: GetSummary %s mismatch (-want +got):\n%s", what, w.IssueUUID, diff)
			}
		}
	}
	check("empty")
	a, b := sampleIssue("a"), sampleIssue("b")
	b.Refresh, b.Gone, b.HintedAt = false, false, time.Time{}
	b.Cards[0].PatchedRevision, b.Cards[1].PatchedRevision = b.CardRevision, b.CardRevision
	must(t, "PutIssue b", s.PutIssue(ctx, b))
	must(t, "PutIssue a", s.PutIssue(ctx, a))
	if !a.Summary().Behind || b.Summary().Behind {
		t.Fatalf("Behind: a %v, b %v; want true, false", a.Summary().Behind, b.Summary().Behind)
	}
	check("after puts", a, b)

	b, err := s.UpdateIssue(ctx, "b", func(x *store.Issue) error {
		x.StatusType, x.UpdateAt, x.HintedAt, x.Refresh = 30, x.UpdateAt+60, time.Date(2026, 3, 1, 0, 0, 0, 1, time.UTC), true
		x.CardRevision++
		return nil
	})
	must(t, "UpdateIssue b", err)
	check("after update", a, b)
	if _, err := s.UpdateIssue(ctx, "b", func(x *store.Issue) error {
		x.StatusType = 99
		return errors.New("changed my mind")
	}); err == nil {
		t.Fatal("UpdateIssue whose func failed: nil error")
	}
	check("after an aborted update", a, b)

	c := sampleIssue("c")
	c.Cards = nil
	c, err = s.AddCard(ctx, c, store.Card{ChatID: "oc_x", MessageID: "om_x",
		SentAt: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)})
	must(t, "AddCard c", err)
	if c.Summary().Cards != 1 || !c.Summary().FirstSent.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("summary of c = %+v, want one card sent 2026-02-01", c.Summary())
	}
	check("after AddCard", a, b, c)

	must(t, "DeleteIssue a", s.DeleteIssue(ctx, "a"))
	check("after delete", b, c)
	_, err = s.GetSummary(ctx, "a")
	mustNotFound(t, "GetSummary after DeleteIssue", err)
}

func testSeenIssues(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "MarkIssuesSeen none", s.MarkIssuesSeen(ctx))
	must(t, "MarkIssuesSeen", s.MarkIssuesSeen(ctx, "a", "b"))
	must(t, "MarkIssuesSeen again", s.MarkIssuesSeen(ctx, "b"))
	for u, want := range map[string]bool{"a": true, "b": true, "c": false} {
		got, err := s.IssueSeen(ctx, u)
		must(t, "IssueSeen", err)
		if got != want {
			t.Errorf("IssueSeen(%q) = %v, want %v", u, got, want)
		}
	}
}

func testReplies(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "PutIssue", s.PutIssue(ctx, sampleIssue("i1")))
	must(t, "MarkRepliesSeen none", s.MarkRepliesSeen(ctx, "i1"))
	must(t, "MarkRepliesSeen", s.MarkRepliesSeen(ctx, "i1", "r1", "r2"))
	must(t, "AddOwnReply", s.AddOwnReply(ctx, "i1", "r3"))

	seen := []struct {
		issue, reply string
		want         bool
	}{
		{"i1", "r1", true}, {"i1", "r2", true}, {"i1", "r3", true}, {"i1", "r4", false},
		{"i2", "r1", false}, // seen sets are per issue
	}
	check := func(when string) {
		t.Helper()
		for _, c := range seen {
			got, err := s.ReplySeen(ctx, c.issue, c.reply)
			must(t, "ReplySeen", err)
			if got != c.want {
				t.Errorf("%s: ReplySeen(%q, %q) = %v, want %v", when, c.issue, c.reply, got, c.want)
			}
		}
	}
	check("before DeleteIssue")
	for r, want := range map[string]bool{"r3": true, "r1": false} {
		got, err := s.IsOwnReply(ctx, r)
		must(t, "IsOwnReply", err)
		if got != want {
			t.Errorf("IsOwnReply(%q) = %v, want %v", r, got, want)
		}
	}
	// Seen replies outlive the record, so a re-tracked issue does not echo old replies.
	must(t, "DeleteIssue", s.DeleteIssue(ctx, "i1"))
	check("after DeleteIssue")
	must(t, "PutIssue again", s.PutIssue(ctx, sampleIssue("i1")))
	check("after PutIssue again")
}

func testClaim(t *testing.T, s store.Store) {
	ctx := t.Context()
	claim := func(key string, want bool) {
		t.Helper()
		got, err := s.Claim(ctx, key, time.Hour)
		must(t, "Claim", err)
		if got != want {
			t.Errorf("Claim(%q) = %v, want %v", key, got, want)
		}
	}
	claimed := func(key string, want bool) {
		t.Helper()
		got, err := s.Claimed(ctx, key)
		must(t, "Claimed", err)
		if got != want {
			t.Errorf("Claimed(%q) = %v, want %v", key, got, want)
		}
	}
	claimed("msg:om_1", false)
	claim("msg:om_1", true)
	claimed("msg:om_1", true)
	claim("msg:om_1", false)
	claim("msg:om_2", true)
	must(t, "Release", s.Release(ctx, "msg:om_1"))
	claimed("msg:om_1", false)
	claim("msg:om_1", true)
	claim("msg:om_1", false)
	must(t, "Release of an unclaimed key", s.Release(ctx, "never"))
	if _, err := s.Claim(ctx, "k", 0); err == nil {
		t.Error("Claim with ttl 0 succeeded, want an error")
	}
}

func testClaimExpires(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok, err := s.Claim(ctx, "evt:1", shortTTL)
	must(t, "Claim", err)
	if !ok {
		t.Fatal("first Claim = false, want true")
	}
	ok, err = s.Claim(ctx, "evt:1", shortTTL)
	must(t, "Claim", err)
	if ok {
		t.Fatal("second Claim within ttl = true, want false")
	}
	waitExpired(t, s, shortTTL, "claim", func() bool {
		if held, err := s.Claimed(ctx, "evt:1"); err != nil || held {
			return false
		}
		ok, err := s.Claim(ctx, "evt:1", time.Hour)
		must(t, "Claim", err)
		return ok
	})
}

// concurrently runs fn(i) for i in [0, n) from n goroutines released at once.
func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

func testClaimConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	var wins atomic.Int32
	errs := make(chan error, 20)
	concurrently(20, func(int) {
		ok, err := s.Claim(ctx, "race", time.Hour)
		if err != nil {
			errs <- err
			return
		}
		if ok {
			wins.Add(1)
		}
	})
	close(errs)
	for err := range errs {
		t.Errorf("Claim: %v", err)
	}
	if got := wins.Load(); got != 1 {
		t.Errorf("%d of 20 concurrent Claims won, want exactly 1", got)
	}
}

func testRoutes(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.Routes(ctx)
	must(t, "Routes empty", err)
	if len(got) != 0 {
		t.Errorf("Routes on an empty store = %v, want none", got)
	}
	for _, r := range []store.Route{
		{ChatID: "oc_2", ChannelUUID: "ch_1", MinLevel: "P2"},
		{ChatID: "oc_1", ChannelUUID: "ch_2", MinLevel: "P3"},
		{ChatID: "oc_1", ChannelUUID: "ch_1", MinLevel: "P3"},
		{ChatID: "oc_1", ChannelUUID: "ch_1", MinLevel: "P1"}, // upsert
	} {
		must(t, "PutRoute", s.PutRoute(ctx, r))
	}
	want := []store.Route{
		{ChatID: "oc_1", ChannelUUID: "ch_1", MinLevel: "P1"},
		{ChatID: "oc_1", ChannelUUID: "ch_2", MinLevel: "P3"},
		{ChatID: "oc_2", ChannelUUID: "ch_1", MinLevel: "P2"},
	}
	got, err = s.Routes(ctx)
	must(t, "Routes", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Routes mismatch (-want +got):\n%s", diff)
	}

	must(t, "DeleteRoute", s.DeleteRoute(ctx, "oc_1", "ch_2"))
	mustNotFound(t, "DeleteRoute again", s.DeleteRoute(ctx, "oc_1", "ch_2"))
	got, err = s.Routes(ctx)
	must(t, "Routes", err)
	if diff := cmp.Diff([]store.Route{want[0], want[2]}, got); diff != "" {
		t.Errorf("Routes after delete mismatch (-want +got):\n%s", diff)
	}
	if err := s.PutRoute(ctx, store.Route{ChannelUUID: "ch_1"}); err == nil {
		t.Error("PutRoute without ChatID succeeded, want an error")
	}
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	v, err := s.Meta(ctx, "guance.key")
	must(t, "Meta", err)
	if v != "" {
		t.Errorf("unset meta = %q, want empty", v)
	}
	must(t, "SetMeta", s.SetMeta(ctx, "guance.key", "wsak_0123"))
	must(t, "SetMeta other", s.SetMeta(ctx, "other", "x"))
	must(t, "SetMeta again", s.SetMeta(ctx, "guance.key", "wsak_4567"))
	if v, err := s.Meta(ctx, "guance.key"); err != nil || v != "wsak_4567" {
		t.Errorf("meta = %q, %v; want the last value set", v, err)
	}
	if v, err := s.Meta(ctx, "other"); err != nil || v != "x" {
		t.Errorf("other meta = %q, %v", v, err)
	}
}

// testMetaFenced checks that a deposed holder's fenced write changes nothing and the new holder's does.
func testMetaFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.SetMetaFenced(ctx, "poller", 0, "storm:oc_1", "x"); err == nil {
		t.Error("SetMetaFenced with term 0: nil error")
	}
	old, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a", Incarnation: "1"}, shortTTL)
	must(t, "AcquireLease a", err)
	ok, err := s.SetMetaFenced(ctx, "poller", old, "storm:oc_1", "by a")
	if err != nil || !ok {
		t.Fatalf("SetMetaFenced by the holder = %v, %v; want true", ok, err)
	}
	waitExpired(t, s, shortTTL, "lease of a", func() bool {
		term, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "b", Incarnation: "1"}, time.Hour)
		return err == nil && term > old
	})
	ok, err = s.SetMetaFenced(ctx, "poller", old, "storm:oc_1", "late write by a")
	if err != nil || ok {
		t.Errorf("SetMetaFenced by the deposed holder = %v, %v; want false", ok, err)
	}
	if v, err := s.Meta(ctx, "storm:oc_1"); err != nil || v != "by a" {
		t.Errorf("meta after the deposed write = %q, %v; want %q", v, err, "by a")
	}
}

func testCursor(t *testing.T, s store.Store) {
	ctx := t.Context()
	v, err := s.Cursor(ctx, "poll")
	must(t, "Cursor", err)
	if v != 0 {
		t.Errorf("unset Cursor = %d, want 0", v)
	}
	for _, step := range []struct{ in, want int64 }{
		{1767225600000, 1767225600000},
		{1767225500000, 1767225600000}, // never goes back
		{1767225700000, 1767225700000},
	} {
		got, err := s.AdvanceCursor(ctx, "poll", step.in)
		must(t, "AdvanceCursor", err)
		if got != step.want {
			t.Errorf("AdvanceCursor(%d) = %d, want %d", step.in, got, step.want)
		}
	}
	v, err = s.Cursor(ctx, "poll")
	must(t, "Cursor", err)
	if v != 1767225700000 {
		t.Errorf("Cursor = %d, want 1767225700000", v)
	}
	v, err = s.Cursor(ctx, "other")
	must(t, "Cursor other", err)
	if v != 0 {
		t.Errorf("Cursor(other) = %d, want 0: cursors must be independent", v)
	}
}

func testCursorConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	vals := rand.Perm(20)
	errs := make(chan error, 20)
	concurrently(20, func(i int) {
		v := int64(1000 + vals[i])
		got, err := s.AdvanceCursor(ctx, "poll", v)
		if err != nil {
			errs <- err
			return
		}
		if got < v {
			errs <- fmt.Errorf("AdvanceCursor(%d) = %d, below its argument", v, got)
		}
	})
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Cursor(ctx, "poll")
	must(t, "Cursor", err)
	if got != 1019 {
		t.Errorf("Cursor after 20 concurrent advances = %d, want 1019", got)
	}
}

func testLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	a1, a2 := store.Holder{Instance: "a", Incarnation: "1"}, store.Holder{Instance: "a", Incarnation: "2"}
	b1 := store.Holder{Instance: "b", Incarnation: "1"}
	acquire := func(h store.Holder) int64 {
		t.Helper()
		term, err := s.AcquireLease(ctx, "poller", h, time.Hour)
		must(t, "AcquireLease", err)
		return term
	}
	t1 := acquire(a1)
	if t1 < 1 {
		t.Fatalf("AcquireLease(free) = %d, want a term ≥ 1", t1)
	}
	if got := acquire(b1); got != 0 {
		t.Errorf("AcquireLease(b) while a holds it = %d, want 0", got)
	}
	if got := acquire(a1); got != t1 {
		t.Errorf("renewing AcquireLease = term %d, want the same term %d", got, t1)
	}
	// A restarted process of the same instance (a newer incarnation) takes the lease at once, with a newer
	// term; the older one cannot take it back while it is held.
	t2 := acquire(a2)
	if t2 <= t1 {
		t.Errorf("AcquireLease by a newer incarnation = %d, want a term above %d", t2, t1)
	}
	if got := acquire(a1); got != 0 {
		t.Errorf("AcquireLease by the older incarnation again = %d, want 0", got)
	}
	must(t, "ReleaseLease by non-holder", s.ReleaseLease(ctx, "poller", b1))
	must(t, "ReleaseLease by a deposed incarnation", s.ReleaseLease(ctx, "poller", a1))
	if got := acquire(b1); got != 0 {
		t.Errorf("AcquireLease(b) after releases by non-holders = %d, want 0", got)
	}
	if got := acquire(a2); got != t2 {
		t.Errorf("renewing AcquireLease(a2) = %d, want %d", got, t2)
	}
	must(t, "ReleaseLease", s.ReleaseLease(ctx, "poller", a2))
	t3 := acquire(b1)
	if t3 <= t2 {
		t.Errorf("AcquireLease(b) after release = %d, want a term above the earlier ones", t3)
	}
	if got := acquire(a2); got != 0 {
		t.Errorf("AcquireLease(a) while b holds it = %d, want 0", got)
	}
	other, err := s.AcquireLease(ctx, "other", a1, time.Hour)
	must(t, "AcquireLease other", err)
	if other < 1 {
		t.Error("AcquireLease(other, a) = 0, want a term: leases must be independent")
	}
	if _, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a"}, time.Hour); err == nil {
		t.Error("AcquireLease with an empty incarnation succeeded, want an error")
	}
}

func testLeaseExpires(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := store.Holder{Instance: "a", Incarnation: "1"}, store.Holder{Instance: "b", Incarnation: "1"}
	ta, err := s.AcquireLease(ctx, "poller", a, shortTTL)
	must(t, "AcquireLease", err)
	if ta == 0 {
		t.Fatal("AcquireLease(a) = 0, want a term")
	}
	tb, err := s.AcquireLease(ctx, "poller", b, shortTTL)
	must(t, "AcquireLease", err)
	if tb != 0 {
		t.Fatal("AcquireLease(b) while a holds it = a term, want 0")
	}
	waitExpired(t, s, shortTTL, "lease", func() bool {
		tb, err = s.AcquireLease(ctx, "poller", b, time.Hour)
		must(t, "AcquireLease", err)
		return tb != 0
	})
	if tb <= ta {
		t.Errorf("term after expiry = %d, want above %d", tb, ta)
	}
	got, err := s.AcquireLease(ctx, "poller", a, time.Hour)
	must(t, "AcquireLease", err)
	if got != 0 {
		t.Error("AcquireLease(a) after b took the expired lease = a term, want 0")
	}
}

func testWorkClaim(t *testing.T, s store.Store) {
	ctx := t.Context()
	claim := func(key string, term int64, want bool) {
		t.Helper()
		got, err := s.ClaimWork(ctx, "poller", key, term, time.Hour)
		must(t, "ClaimWork", err)
		if got != want {
			t.Errorf("ClaimWork(%s, term %d) = %v, want %v", key, term, got, want)
		}
	}
	claim("card:1", 3, true)
	claim("card:1", 3, false) // held in this term
	claim("card:1", 2, false) // an older term never takes a newer claim
	claim("card:2", 3, true)  // keys are independent
	// A newer term voids the claim at once: the claim's holder is dead or deposed.
	claim("card:1", 4, true)
	must(t, "ReleaseWork by the old term", s.ReleaseWork(ctx, "card:1", 3))
	claim("card:1", 4, false)
	must(t, "ReleaseWork", s.ReleaseWork(ctx, "card:1", 4))
	claim("card:1", 4, true)
	if _, err := s.ClaimWork(ctx, "poller", "k", 0, time.Hour); err == nil {
		t.Error("ClaimWork with term 0 succeeded, want an error")
	}
	if _, err := s.ClaimWork(ctx, "poller", "k", 1, 0); err == nil {
		t.Error("ClaimWork with ttl 0 succeeded, want an error")
	}
}

func testDeleteJobIf(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	j := store.Job{ID: "issue_1", Payload: []byte(`{"x":1}`), NotBefore: now, Enqueued: now, Rev: 7}
	must(t, "PutJob", s.PutJob(ctx, "patches", j))
	del := func(rev uint64, want bool) {
		t.Helper()
		got, err := s.DeleteJobIf(ctx, "patches", "issue_1", rev)
		must(t, "DeleteJobIf", err)
		if got != want {
			t.Errorf("DeleteJobIf(rev %d) = %v, want %v", rev, got, want)
		}
	}
	// Queued again while it was worked on: the newer job stays.
	j.Rev, j.NotBefore = 1<<63+5, now.Add(time.Second)
	must(t, "PutJob again", s.PutJob(ctx, "patches", j))
	del(7, false)
	got, err := s.DueJobs(ctx, "patches", now.Add(time.Hour), 0)
	must(t, "DueJobs", err)
	if diff := cmp.Diff([]store.Job{j}, got); diff != "" {
		t.Errorf("job after a refused DeleteJobIf mismatch (-want +got):\n%s", diff)
	}
	del(1<<63+5, true)
	got, err = s.DueJobs(ctx, "patches", now.Add(time.Hour), 0)
	must(t, "DueJobs", err)
	if len(got) != 0 {
		t.Errorf("DueJobs after DeleteJobIf = %v, want none", got)
	}
	del(1<<63+5, false) // missing
	// A job written without a rev (by an older version) is deleted with rev 0.
	must(t, "PutJob", s.PutJob(ctx, "patches", store.Job{ID: "old", NotBefore: now}))
	ok, err := s.DeleteJobIf(ctx, "patches", "old", 0)
	must(t, "DeleteJobIf", err)
	if !ok {
		t.Error("DeleteJobIf(rev 0) of a job without a rev = false, want true")
	}
}

// testWorkClaimFenced: a holder deposed by a newer term cannot claim work any more, not
// even work nobody has claimed yet.
func testWorkClaimFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	old, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a", Incarnation: "1"}, time.Hour)
	must(t, "AcquireLease", err)
	cur, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a", Incarnation: "2"}, time.Hour)
	must(t, "AcquireLease", err)
	if ok, err := s.ClaimWork(ctx, "poller", "card:9", old, time.Hour); err != nil || ok {
		t.Errorf("ClaimWork by the deposed term %d = %v, %v; want false", old, ok, err)
	}
	if ok, err := s.ClaimWork(ctx, "poller", "card:9", cur, time.Hour); err != nil || !ok {
		t.Errorf("ClaimWork by the current term %d = %v, %v; want true", cur, ok, err)
	}
	if ok, err := s.ClaimWork(ctx, "other", "card:9b", old, time.Hour); err != nil || !ok {
		t.Errorf("ClaimWork fenced by another lease = %v, %v; want true (leases are independent)", ok, err)
	}
}

func testWorkClaimExpires(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok, err := s.ClaimWork(ctx, "poller", "w", 5, shortTTL)
	must(t, "ClaimWork", err)
	if !ok {
		t.Fatal("ClaimWork = false, want true")
	}
	waitExpired(t, s, shortTTL, "work claim", func() bool {
		ok, err := s.ClaimWork(ctx, "poller", "w", 5, time.Hour)
		must(t, "ClaimWork", err)
		return ok
	})
}

func testJobs(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	job := func(id string, notBefore time.Duration, attempts int) store.Job {
		return store.Job{ID: id, Payload: []byte(`{"reply":"` + id + `"}`), NotBefore: now.Add(notBefore), Attempts: attempts}
	}
	due := func(limit int, want ...store.Job) {
		t.Helper()
		got, err := s.DueJobs(ctx, "replies", now, limit)
		must(t, "DueJobs", err)
		if len(want) == 0 && len(got) == 0 {
			return
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("DueJobs(limit %d) mismatch (-want +got):\n%s", limit, diff)
		}
	}
	count := func(queue string, want int) {
		t.Helper()
		got, err := s.CountJobs(ctx, queue)
		must(t, "CountJobs", err)
		if got != want {
			t.Errorf("CountJobs(%s) = %d, want %d", queue, got, want)
		}
	}

	due(0)
	count("replies", 0)
	j1, j2, j3, j4 := job("j1", -3*time.Minute, 0), job("j2", -time.Minute, 2), job("j3", time.Hour, 0), job("j4", -2*time.Minute, 1)
	j5 := job("j5", 0, 0) // due exactly now
	for _, j := range []store.Job{j1, j2, j3, j4, j5} {
		must(t, "PutJob", s.PutJob(ctx, "replies", j))
	}
	must(t, "PutJob other queue", s.PutJob(ctx, "other", job("x", -time.Hour, 0)))
	count("replies", 5)
	count("other", 1)
	due(0, j1, j4, j2, j5)
	due(2, j1, j4)

	// Upsert moves j3 to the front and replaces its payload and attempts.
	j3 = job("j3", -4*time.Minute, 1)
	j3.Payload = []byte("retry")
	must(t, "PutJob upsert", s.PutJob(ctx, "replies", j3))
	count("replies", 5)
	due(3, j3, j1, j4)

	// Rescheduling into the future hides a job.
	j1 = job("j1", time.Minute, 1)
	must(t, "PutJob reschedule", s.PutJob(ctx, "replies", j1))
	due(0, j3, j4, j2, j5)

	must(t, "DeleteJob", s.DeleteJob(ctx, "replies", "j4"))
	must(t, "DeleteJob of a missing job", s.DeleteJob(ctx, "replies", "j4"))
	count("replies", 4)
	due(0, j3, j2, j5)
	count("other", 1)
	if err := s.PutJob(ctx, "replies", store.Job{}); err == nil {
		t.Error("PutJob without ID succeeded, want an error")
	}
}

func testReopen(t *testing.T, s store.Store, r Reopener) {
	ctx := t.Context()
	is := sampleIssue("i1")
	route := store.Route{ChatID: "oc_1", ChannelUUID: "ch_1", MinLevel: "P2"}
	j := store.Job{ID: "j1", Payload: []byte("p"), NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	must(t, "PutIssue", s.PutIssue(ctx, is))
	must(t, "MarkIssuesSeen", s.MarkIssuesSeen(ctx, "skipped"))
	must(t, "MarkRepliesSeen", s.MarkRepliesSeen(ctx, "i1", "r1"))
	must(t, "AddOwnReply", s.AddOwnReply(ctx, "i1", "r2"))
	must(t, "PutRoute", s.PutRoute(ctx, route))
	_, err := s.AdvanceCursor(ctx, "poll", 42)
	must(t, "AdvanceCursor", err)
	_, err = s.Claim(ctx, "evt:1", time.Hour)
	must(t, "Claim", err)
	term, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a", Incarnation: "1"}, time.Hour)
	must(t, "AcquireLease", err)
	must(t, "PutJob", s.PutJob(ctx, "q", j))
	for range 3 {
		_, err := s.TakeRateSlot(ctx, "guance", 3, time.Hour)
		must(t, "TakeRateSlot", err)
	}

	s = r.Reopen(t)

	got, err := s.IssueByMessage(ctx, is.Cards[0].ThreadID)
	must(t, "IssueByMessage after reopen", err)
	if diff := cmp.Diff(is, got); diff != "" {
		t.Errorf("issue after reopen mismatch (-want +got):\n%s", diff)
	}
	bools := []struct {
		what string
		fn   func() (bool, error)
		want bool
	}{
		{"IssueSeen(skipped)", func() (bool, error) { return s.IssueSeen(ctx, "skipped") }, true},
		{"ReplySeen(i1, r1)", func() (bool, error) { return s.ReplySeen(ctx, "i1", "r1") }, true},
		{"IsOwnReply(r2)", func() (bool, error) { return s.IsOwnReply(ctx, "r2") }, true},
		{"Claim(evt:1)", func() (bool, error) { return s.Claim(ctx, "evt:1", time.Hour) }, false},
		{"TakeRateSlot(guance) with the window spent before the reopen", func() (bool, error) {
			wait, err := s.TakeRateSlot(ctx, "guance", 3, time.Hour)
			return wait == 0, err
		}, false},
	}
	for _, b := range bools {
		got, err := b.fn()
		must(t, b.what, err)
		if got != b.want {
			t.Errorf("%s after reopen = %v, want %v", b.what, got, b.want)
		}
	}
	routes, err := s.Routes(ctx)
	must(t, "Routes", err)
	if diff := cmp.Diff([]store.Route{route}, routes); diff != "" {
		t.Errorf("Routes after reopen mismatch (-want +got):\n%s", diff)
	}
	c, err := s.Cursor(ctx, "poll")
	must(t, "Cursor", err)
	if c != 42 {
		t.Errorf("Cursor after reopen = %d, want 42", c)
	}
	jobs, err := s.DueJobs(ctx, "q", j.NotBefore, 0)
	must(t, "DueJobs", err)
	if diff := cmp.Diff([]store.Job{j}, jobs); diff != "" {
		t.Errorf("DueJobs after reopen mismatch (-want +got):\n%s", diff)
	}
	// The same instance, restarted, takes its lease at once with a newer term; a work claim of the old
	// term does not hold it up.
	ok, err := s.ClaimWork(ctx, "poller", "card:1", term, time.Hour)
	must(t, "ClaimWork", err)
	if !ok {
		t.Fatal("ClaimWork before the restart = false, want true")
	}
	newTerm, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "a", Incarnation: "2"}, time.Hour)
	must(t, "AcquireLease after reopen", err)
	if newTerm <= term {
		t.Errorf("AcquireLease by the restarted instance = %d, want a term above %d", newTerm, term)
	}
	ok, err = s.ClaimWork(ctx, "poller", "card:1", newTerm, time.Hour)
	must(t, "ClaimWork", err)
	if !ok {
		t.Error("ClaimWork in the new term = false, want true: the old term's claim must not hold the work")
	}
}

func testIssueEveryField(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := sampleIssue("issue-1")
	v := reflect.ValueOf(want)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("sampleIssue leaves store.Issue.%s zero; set it so that the round trips cover it", v.Type().Field(i).Name)
		}
	}
	must(t, "PutIssue", s.PutIssue(ctx, want))
	got, err := s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue after PutIssue mismatch (-want +got):\n%s", diff)
	}
	got, err = s.UpdateIssue(ctx, want.IssueUUID, func(is *store.Issue) error {
		if diff := cmp.Diff(want, *is); diff != "" {
			t.Errorf("UpdateIssue passed fn a different record (-want +got):\n%s", diff)
		}
		return nil
	})
	must(t, "UpdateIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UpdateIssue result mismatch (-want +got):\n%s", diff)
	}
	got, err = s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue after UpdateIssue mismatch (-want +got):\n%s", diff)
	}
	list, err := s.ListIssues(ctx)
	must(t, "ListIssues", err)
	if diff := cmp.Diff(listed(want), list); diff != "" {
		t.Errorf("ListIssues mismatch (-want +got):\n%s", diff)
	}
}

func testUpdateIssue(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, before))
	must(t, "PutIssue other", s.PutIssue(ctx, sampleIssue("issue-2")))

	want := before
	want.StatusType, want.CardRevision, want.Name = 20, before.CardRevision+1, "renamed"
	want.Snapshot = json.RawMessage(`{"status":"resolved"}`)
	got, err := s.UpdateIssue(ctx, before.IssueUUID, func(is *store.Issue) error {
		if diff := cmp.Diff(before, *is); diff != "" {
			t.Errorf("UpdateIssue passed fn a different record (-want +got):\n%s", diff)
		}
		is.StatusType, is.CardRevision, is.Name = 20, is.CardRevision+1, "renamed"
		is.Snapshot = json.RawMessage(`{"status":"resolved"}`)
		return nil
	})
	must(t, "UpdateIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UpdateIssue result mismatch (-want +got):\n%s", diff)
	}
	got, err = s.GetIssue(ctx, before.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue after UpdateIssue mismatch (-want +got):\n%s", diff)
	}
	// Other records are untouched.
	got, err = s.GetIssue(ctx, "issue-2")
	must(t, "GetIssue issue-2", err)
	if diff := cmp.Diff(sampleIssue("issue-2"), got); diff != "" {
		t.Errorf("GetIssue(issue-2) after updating issue-1 mismatch (-want +got):\n%s", diff)
	}
}

func testUpdateIssueNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	called := false
	_, err := s.UpdateIssue(ctx, "missing", func(*store.Issue) error {
		called = true
		return nil
	})
	mustNotFound(t, "UpdateIssue", err)
	if called {
		t.Error("UpdateIssue of a missing issue called fn, want it not called")
	}
	_, err = s.GetIssue(ctx, "missing")
	mustNotFound(t, "GetIssue after UpdateIssue of a missing issue", err)
	list, err := s.ListIssues(ctx)
	must(t, "ListIssues", err)
	if len(list) != 0 {
		t.Errorf("ListIssues after UpdateIssue of a missing issue = %v, want none", list)
	}
}

func testUpdateIssueFuncError(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, want))
	errBoom := errors.New("boom")
	_, err := s.UpdateIssue(ctx, want.IssueUUID, func(is *store.Issue) error {
		is.Name = "changed"
		is.Cards = append(is.Cards, store.Card{ChatID: "oc_x", MessageID: "om_aborted", ThreadID: "omt_aborted"})
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Errorf("UpdateIssue with a failing fn: err = %v, want it to wrap fn's error", err)
	}
	got, err := s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record changed although fn failed (-want +got):\n%s", diff)
	}
	for _, id := range []string{"om_aborted", "omt_aborted"} {
		_, err := s.IssueByMessage(ctx, id)
		mustNotFound(t, "IssueByMessage("+id+") after a failed update", err)
	}
}

func testUpdateIssueKeepsUUID(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, want))
	_, err := s.UpdateIssue(ctx, want.IssueUUID, func(is *store.Issue) error {
		is.IssueUUID, is.Name = "issue-2", "changed"
		return nil
	})
	if err == nil {
		t.Error("UpdateIssue whose fn changed IssueUUID succeeded, want an error")
	}
	got, err := s.GetIssue(ctx, want.IssueUUID)
	must(t, "GetIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record changed although fn changed its uuid (-want +got):\n%s", diff)
	}
	_, err = s.GetIssue(ctx, "issue-2")
	mustNotFound(t, "GetIssue of the uuid fn set", err)
}

func testUpdateIssueMapsNewIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := sampleIssue("issue-1")
	must(t, "PutIssue", s.PutIssue(ctx, old))
	want := old
	want.Cards = []store.Card{{ChatID: "oc_chat1", MessageID: "om_new", ThreadID: "omt_new"}, old.Cards[1]}
	want.CardRevision = 1
	got, err := s.UpdateIssue(ctx, old.IssueUUID, func(is *store.Issue) error {
		is.Cards[0] = store.Card{ChatID: "oc_chat1", MessageID: "om_new", ThreadID: "omt_new"}
		is.CardRevision = 1
		return nil
	})
	must(t, "UpdateIssue", err)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UpdateIssue result mismatch (-want +got):\n%s", diff)
	}
	for _, id := range []string{old.Cards[0].MessageID, old.Cards[0].ThreadID, "om_new", "omt_new"} {
		got, err := s.IssueByMessage(ctx, id)
		must(t, "IssueByMessage "+id, err)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("IssueByMessage(%q) after UpdateIssue mismatch (-want +got):\n%s", id, diff)
		}
	}
	list, err := s.ListIssues(ctx)
	must(t, "ListIssues", err)
	if diff := cmp.Diff(listed(want), list); diff != "" {
		t.Errorf("ListIssues after UpdateIssue mismatch (-want +got):\n%s", diff)
	}
	seen, err := s.IssueSeen(ctx, old.IssueUUID)
	must(t, "IssueSeen", err)
	if !seen {
		t.Errorf("IssueSeen(%q) = false after UpdateIssue, want true", old.IssueUUID)
	}
}

// testUpdateIssueConcurrent fails when UpdateIssue is a plain read then write: concurrent increments get lost.
func testUpdateIssueConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const workers, perWorker = 20, 10
	is := sampleIssue("issue-1")
	is.SyncedReplies = 0
	must(t, "PutIssue", s.PutIssue(ctx, is))
	errs := make(chan error, workers)
	concurrently(workers, func(int) {
		for range perWorker {
			_, err := s.UpdateIssue(ctx, is.IssueUUID, func(is *store.Issue) error {
				is.SyncedReplies++
				return nil
			})
			if err != nil {
				errs <- err
				return
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Errorf("UpdateIssue: %v", err)
	}
	got, err := s.GetIssue(ctx, is.IssueUUID)
	must(t, "GetIssue", err)
	if got.SyncedReplies != workers*perWorker {
		t.Errorf("SyncedReplies after %d×%d concurrent increments = %d, want %d",
			workers, perWorker, got.SyncedReplies, workers*perWorker)
	}
}

// takeSlot calls TakeRateSlot and fails the test on an error.
func takeSlot(t *testing.T, s store.Store, name string, limit int, window time.Duration) time.Duration {
	t.Helper()
	wait, err := s.TakeRateSlot(t.Context(), name, limit, window)
	must(t, "TakeRateSlot "+name, err)
	return wait
}

// checkRefused checks that a TakeRateSlot result refused a slot with a wait in (0, window].
func checkRefused(t *testing.T, what string, wait, window time.Duration) {
	t.Helper()
	if wait <= 0 || wait > window {
		t.Errorf("%s: wait = %v, want a refusal with a wait in (0, %v]", what, wait, window)
	}
}

func testRateSlotLimit(t *testing.T, s store.Store) {
	const limit, window = 3, time.Minute
	for i := range limit {
		if wait := takeSlot(t, s, "guance", limit, window); wait != 0 {
			t.Fatalf("slot %d of %d: wait = %v, want 0 (granted)", i+1, limit, wait)
		}
	}
	for i := range 3 {
		checkRefused(t, fmt.Sprintf("call %d beyond the limit", i+1), takeSlot(t, s, "guance", limit, window), window)
	}
}

func testRateSlotWindowPasses(t *testing.T, s store.Store) {
	const limit, window = 2, shortTTL
	start := time.Now()
	for range limit {
		if wait := takeSlot(t, s, "guance", limit, window); wait != 0 {
			t.Fatalf("slot within the limit: wait = %v, want 0", wait)
		}
	}
	wait := takeSlot(t, s, "guance", limit, window)
	if wait == 0 && time.Since(start) >= window {
		t.Skipf("the machine stalled for the whole %v window; nothing to judge", window)
	}
	if wait <= 0 || wait > window {
		t.Fatalf("slot beyond the limit: wait = %v, want a refusal with a wait in (0, %v]", wait, window)
	}
	// Refused calls take no slot, so polling does not keep the window full.
	waitExpired(t, s, wait, "rate window", func() bool {
		return takeSlot(t, s, "guance", limit, window) == 0
	})
}

func testRateSlotNames(t *testing.T, s store.Store) {
	const window = time.Minute
	for _, name := range []string{"a", "b"} {
		if wait := takeSlot(t, s, name, 1, window); wait != 0 {
			t.Errorf("first slot of %s: wait = %v, want 0: names must be independent", name, wait)
		}
		checkRefused(t, "second slot of "+name, takeSlot(t, s, name, 1, window), window)
	}
}

// testRateSlotConcurrent fails when the count and the add are separate steps: callers that count at the same
// time all see room. Each caller calls more than once, so that the calls overlap even when the first ones are
// spread out by connection setup.
func testRateSlotConcurrent(t *testing.T, s store.Store) {
	const callers, calls, limit, window = 50, 4, 10, time.Minute
	var granted atomic.Int32
	errs := make(chan error, callers)
	concurrently(callers, func(int) {
		for range calls {
			wait, err := s.TakeRateSlot(t.Context(), "guance", limit, window)
			switch {
			case err != nil:
				errs <- err
				return
			case wait == 0:
				granted.Add(1)
			case wait < 0 || wait > window:
				errs <- fmt.Errorf("refused with wait %v, want one in (0, %v]", wait, window)
				return
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Errorf("TakeRateSlot: %v", err)
	}
	if got := granted.Load(); got != limit {
		t.Errorf("%d concurrent calls got %d slots within one window, want exactly the limit %d",
			callers*calls, got, limit)
	}
}

func testRateSlotInvalid(t *testing.T, s store.Store) {
	for _, c := range []struct {
		limit  int
		window time.Duration
	}{
		{0, time.Second}, {-1, time.Second}, {1, 0}, {1, -time.Second},
	} {
		if _, err := s.TakeRateSlot(t.Context(), "guance", c.limit, c.window); err == nil {
			t.Errorf("TakeRateSlot(limit %d, window %v) succeeded, want an error", c.limit, c.window)
		}
	}
}
