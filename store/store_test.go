package store_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"issuebot/store"
	"issuebot/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func TestRedisContract(t *testing.T) {
	storetest.Contract(t, storetest.RedisSubject)
}

func TestEmbeddedContract(t *testing.T) {
	storetest.Contract(t, storetest.EmbeddedSubject)
}

func TestEmbeddedFileLocked(t *testing.T) {
	first := storetest.Embedded(t)
	start := time.Now()
	second, err := store.OpenEmbedded(first.Path(), store.WithLockTimeout(200*time.Millisecond))
	if err == nil {
		_ = second.Close()
		t.Fatal("second OpenEmbedded of an open file succeeded, want an error")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("second OpenEmbedded took %v to fail, want about the 200ms lock timeout", took)
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("error = %q, want it to say the file is locked by another process", err)
	}
	// The first store still works.
	if err := first.Ping(t.Context()); err != nil {
		t.Errorf("Ping of the first store: %v", err)
	}
}

func TestEmbeddedTTLSweep(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"), store.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	if err := s.MarkIssuesSeen(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	// A deleted issue's seen replies are kept for the retention period, then swept.
	if err := s.PutIssue(ctx, store.Issue{IssueUUID: "i1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRepliesSeen(ctx, "i1", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteIssue(ctx, "i1"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(store.Retention + time.Hour)
	if ok, err := s.Claim(ctx, "trigger-sweep", time.Minute); err != nil || !ok {
		t.Fatalf("Claim = %v, %v, want true, nil", ok, err)
	}
	if seen, err := s.IssueSeen(ctx, "old"); err != nil || seen {
		t.Errorf("IssueSeen(old) after retention = %v, %v, want false, nil", seen, err)
	}
	if seen, err := s.ReplySeen(ctx, "i1", "r1"); err != nil || seen {
		t.Errorf("ReplySeen(i1, r1) after retention = %v, %v, want false, nil", seen, err)
	}
}

func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(t.Context(), "", dir)
	if err != nil {
		t.Fatalf("Open embedded: %v", err)
	}
	defer s.Close()
	if got, want := s.Kind(), "embedded"; got != want {
		t.Errorf("Kind() = %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, store.EmbeddedFile)); err != nil {
		t.Errorf("store file: %v", err)
	}
}

func TestOpenRedisKeepsPasswordSecret(t *testing.T) {
	for _, url := range []string{
		"redis://:s3cretpw@127.0.0.1:1/0",       // unreachable
		"redis://:s3cretpw@127.0.0.1:badport/0", // malformed
		"redis://:s3cretpw@127.0.0.1:1/notadb",  // bad database
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		s, err := store.Open(ctx, url, "")
		cancel()
		if err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded, want an error", url)
			continue
		}
		if strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open error leaks the password: %v", err)
		}
	}
}

func TestOpenRedis(t *testing.T) {
	addr := storetest.RedisAddr(t)
	s, err := store.Open(t.Context(), "redis://"+addr+"/0", "", store.WithPrefix("issuebot-test-open:"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if got, want := s.Kind(), "redis"; got != want {
		t.Errorf("Kind() = %q, want %q", got, want)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// TestRedisSeenSetsArePruned checks that seen issues and the bot's own replies older than Retention are
// dropped on the next write, by the store's clock (Redis has no per-member TTL).
func TestRedisSeenSetsArePruned(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := storetest.Redis(t, store.WithClock(clock.Now))
	ctx := t.Context()
	if err := s.MarkIssuesSeen(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOwnReply(ctx, "i1", "r-old"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(store.Retention + time.Hour)
	if err := s.MarkIssuesSeen(ctx, "new"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOwnReply(ctx, "i1", "r-new"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		fn   func() (bool, error)
		want bool
	}{
		{"IssueSeen(old)", func() (bool, error) { return s.IssueSeen(ctx, "old") }, false},
		{"IssueSeen(new)", func() (bool, error) { return s.IssueSeen(ctx, "new") }, true},
		{"IsOwnReply(r-old)", func() (bool, error) { return s.IsOwnReply(ctx, "r-old") }, false},
		{"IsOwnReply(r-new)", func() (bool, error) { return s.IsOwnReply(ctx, "r-new") }, true},
	} {
		got, err := c.fn()
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if got != c.want {
			t.Errorf("%s after retention = %v, want %v", c.what, got, c.want)
		}
	}
}

// TestRedisRepliesOfUntrackedIssueExpire checks that the seen replies of an issue without a record get the
// retention TTL (they would otherwise stay forever), and lose it when the issue gets a record.
func TestRedisRepliesOfUntrackedIssueExpire(t *testing.T) {
	s := storetest.Redis(t)
	ctx := t.Context()
	raw := redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)})
	t.Cleanup(func() { _ = raw.Close() })
	// The key spelling is the one documented in the package comment.
	key := s.Prefix() + "replies:ghost"
	ttl := func() time.Duration {
		t.Helper()
		d, err := raw.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		return d
	}

	if err := s.MarkRepliesSeen(ctx, "ghost", "r1"); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got <= store.Retention-time.Hour || got > store.Retention {
		t.Errorf("TTL of replies of an issue without a record = %v, want about %v", got, store.Retention)
	}
	if err := s.PutIssue(ctx, store.Issue{IssueUUID: "ghost"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOwnReply(ctx, "ghost", "r2"); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got != -1 {
		t.Errorf("TTL of replies of an issue with a record = %v, want none (-1)", got)
	}
	if err := s.DeleteIssue(ctx, "ghost"); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got <= 0 {
		t.Errorf("TTL of replies after DeleteIssue = %v, want about %v", got, store.Retention)
	}
	for _, r := range []string{"r1", "r2"} {
		if ok, err := s.ReplySeen(ctx, "ghost", r); err != nil || !ok {
			t.Errorf("ReplySeen(ghost, %s) = %v, %v, want true, nil", r, ok, err)
		}
	}
}

// TestRedisRateSlotKey checks the documented key of a rate window: a zset with a TTL of the window, so that
// an idle window leaves nothing behind.
func TestRedisRateSlotKey(t *testing.T) {
	s := storetest.Redis(t)
	ctx := t.Context()
	raw := redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)})
	t.Cleanup(func() { _ = raw.Close() })
	key := s.Prefix() + "ratelimit:guance"
	const window = 2 * time.Second // long enough that a stalled machine still sees the key

	if wait, err := s.TakeRateSlot(ctx, "guance", 5, window); err != nil || wait != 0 {
		t.Fatalf("TakeRateSlot = %v, %v, want 0, nil", wait, err)
	}
	if typ, err := raw.Type(ctx, key).Result(); err != nil || typ != "zset" {
		t.Errorf("TYPE %s = %q, %v, want zset", key, typ, err)
	}
	if ttl, err := raw.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > window {
		t.Errorf("PTTL %s = %v, %v, want within (0, %v]", key, ttl, err, window)
	}
	deadline := time.Now().Add(window + 5*time.Second)
	for {
		n, err := raw.Exists(ctx, key).Result()
		if err != nil {
			t.Fatalf("EXISTS %s: %v", key, err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists %v after its window of %v", key, 5*time.Second, window)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestRedisRateSlotIgnoresClientClocks checks that two replicas whose clocks are a day apart share one rate
// window: the script reads the Redis server's time.
func TestRedisRateSlotIgnoresClientClocks(t *testing.T) {
	now := time.Now()
	a := storetest.Redis(t, store.WithClock(func() time.Time { return now }))
	b := store.NewRedis(redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)}),
		store.WithPrefix(a.Prefix()), store.WithClock(func() time.Time { return now.Add(24 * time.Hour) }))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	const limit, window = 2, time.Minute
	for i, s := range []*store.Redis{a, b} {
		if wait, err := s.TakeRateSlot(ctx, "guance", limit, window); err != nil || wait != 0 {
			t.Fatalf("slot %d: TakeRateSlot = %v, %v, want 0, nil", i+1, wait, err)
		}
	}
	for i, s := range []*store.Redis{a, b} {
		wait, err := s.TakeRateSlot(ctx, "guance", limit, window)
		if err != nil || wait <= 0 || wait > window {
			t.Errorf("replica %d beyond the shared limit: TakeRateSlot = %v, %v, want a wait in (0, %v]", i+1, wait, err, window)
		}
	}
}

// TestEmbeddedLeaseOfEarlierOpenIsVoid checks that a lease taken before the file was opened again is free
// to any instance: the file lock says its holder is gone, so nobody waits for its expiry.
func TestEmbeddedLeaseOfEarlierOpenIsVoid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	ctx := t.Context()
	s, err := store.OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "host-a", Incarnation: "1"}, time.Hour)
	if err != nil || old == 0 {
		t.Fatalf("AcquireLease = %d, %v, want a term", old, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	term, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "host-b", Incarnation: "1"}, time.Hour)
	if err != nil || term <= old {
		t.Fatalf("AcquireLease by another instance after reopen = %d, %v, want a term above %d", term, err, old)
	}
	if got, err := s.AcquireLease(ctx, "poller", store.Holder{Instance: "host-c", Incarnation: "1"}, time.Hour); err != nil || got != 0 {
		t.Errorf("AcquireLease by a third instance in the same session = %d, %v, want 0", got, err)
	}
}

// TestRedisLeaseReplacesOldFormat checks that a lease left as a plain string by an earlier version of the bot
// does not break the lease.
func TestRedisLeaseReplacesOldFormat(t *testing.T) {
	s := storetest.Redis(t)
	ctx := t.Context()
	raw := redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)})
	t.Cleanup(func() { _ = raw.Close() })
	if err := raw.Set(ctx, s.Prefix()+"lease:poller", "old-owner", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	h := store.Holder{Instance: "a", Incarnation: "1"}
	if err := s.ReleaseLease(ctx, "poller", h); err != nil {
		t.Fatalf("ReleaseLease over the old format: %v", err)
	}
	if term, err := s.AcquireLease(ctx, "poller", h, time.Hour); err != nil || term == 0 {
		t.Fatalf("AcquireLease over the old format = %d, %v, want a term", term, err)
	}
}

func TestIssueOfOneCardDecodes(t *testing.T) {
	// A record written before an issue could have several cards.
	old := `{"issue_uuid":"issue_1","chat_id":"oc_1","card_message_id":"om_1","thread_id":"omt_1","card_revision":3,` +
		`"patched_revision":2,"sent_at":"2026-01-01T08:00:00Z","name":"disk full"}`
	var is store.Issue
	if err := json.Unmarshal([]byte(old), &is); err != nil {
		t.Fatal(err)
	}
	want := []store.Card{{ChatID: "oc_1", MessageID: "om_1", ThreadID: "omt_1", PatchedRevision: 2,
		SentAt: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)}}
	if is.Name != "disk full" || is.CardRevision != 3 || !reflect.DeepEqual(is.Cards, want) {
		t.Errorf("decoded %+v, want its one card %+v", is, want)
	}
	if c, ok := is.CardOf("omt_1"); !ok || c.MessageID != "om_1" {
		t.Errorf("CardOf(thread) = %+v, %v", c, ok)
	}
	if is.Card("oc_1") == nil || is.Card("oc_2") != nil {
		t.Error("Card(chat) does not find the one card by its chat")
	}
	// Written again, the record has the new shape only.
	data, err := json.Marshal(is)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "card_message_id") {
		t.Errorf("re-encoded record keeps the old fields: %s", data)
	}
}

// TestEmbeddedSummarizesOlderFiles checks that a file written before summaries were kept gets them at
// open.
func TestEmbeddedSummarizesOlderFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	ctx := t.Context()
	s, err := store.OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	want := putSummarized(t, s, "i1", "i2", "i3")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("summaries")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	got, err := s.ListSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summaries after reopening an older file (-want +got):\n%s", diff)
	}
}

// TestRedisSummarizesOlderKeyspaces checks that a keyspace written before summaries were kept gets them
// on the first ListSummaries, and that a deleted record gets none. (summarizeScript's EXISTS guard, for
// a record deleted between the scan's read and its write, is not reached here.)
func TestRedisSummarizesOlderKeyspaces(t *testing.T) {
	s := storetest.Redis(t)
	ctx := t.Context()
	want := putSummarized(t, s, "i1", "i2", "i3")
	raw := redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)})
	t.Cleanup(func() { _ = raw.Close() })
	if err := raw.Del(ctx, s.Prefix()+"summaries", s.Prefix()+"summaries:built").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteIssue(ctx, "i2"); err != nil {
		t.Fatal(err)
	}
	fresh := store.NewRedis(redis.NewClient(&redis.Options{Addr: storetest.RedisAddr(t)}), store.WithPrefix(s.Prefix()))
	t.Cleanup(func() { _ = fresh.Close() })
	got, err := fresh.ListSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Summary{want[0], want[2]}, got); diff != "" {
		t.Errorf("summaries of an older keyspace (-want +got):\n%s", diff)
	}
	if n, err := raw.Exists(ctx, s.Prefix()+"summaries:built").Result(); err != nil || n != 1 {
		t.Errorf("summaries:built exists = %d, %v; want 1", n, err)
	}
}

// putSummarized writes a record per uuid and returns their summaries.
func putSummarized(t *testing.T, s store.Store, uuids ...string) []store.Summary {
	t.Helper()
	var out []store.Summary
	for i, u := range uuids {
		is := store.Issue{IssueUUID: u, StatusType: 10, UpdateAt: int64(1000 + i), CardRevision: 2,
			Cards: []store.Card{{ChatID: "oc_1", MessageID: "om_" + u, PatchedRevision: 1,
				SentAt: time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC)}}}
		if err := s.PutIssue(t.Context(), is); err != nil {
			t.Fatal(err)
		}
		out = append(out, is.Summary())
	}
	return out
}
