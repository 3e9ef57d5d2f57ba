// Package store keeps issuebot's state: which Feishu card and thread belong to which Guance issue, which
// issues and replies have been seen, deduplication claims, chat routes, poll cursors, the poller lease and a
// durable job queue.
//
// Two implementations satisfy [Store] and pass the same contract suite (store/storetest): [Redis], for one or
// more replicas sharing state, and [Embedded], a single bbolt file for a single replica (the default).
//
// # Redis keys
//
// Every key starts with a configurable prefix, "issuebot:" by default ([WithPrefix]). Keys are built only in
// keys.go. <id>, <key>, <name> and <queue> are the caller's strings, verbatim.
//
//	key                      type    TTL        content
//	issue:<issueUUID>        string  none       JSON record of one carded issue ([Issue]) without its Snapshot
//	snap:<issueUUID>         string  none       the record's Snapshot (kept apart: ListIssues does not read it)
//	issues                   set     none       issue uuids that have a record (for ListIssues)
//	summaries                hash    none       field issue uuid → the record's [Summary], written with the record
//	summaries:built          string  none       "1" once every record had its summary written (ListSummaries
//	                                            writes those of records older than summaries first)
//	msg:<id>                 string  none       issue uuid, for a card message id (om_…) or a thread id (omt_…)
//	seen:issues              zset    members    issue uuids known to the poller, score = unix ms when marked;
//	                                 pruned     members older than 30 days are pruned on every write
//	replies:<issueUUID>      zset    none/30d   Guance reply uuids seen on that issue (incl. the bot's own),
//	                                            score = unix ms; no TTL while the issue has a record, 30 days
//	                                            after DeleteIssue or, while it has none, after the last mark
//	                                            (PutIssue removes the TTL again)
//	own                      zset    members    reply uuids the bot created, score = unix ms; pruned after 30 days
//	claim:<key>              string  caller's   "1"; set with SET NX PX (Claim), deleted by Release; read by Claimed (EXISTS)
//	routes                   hash    none       field "<chatID>\x00<channelUUID>" → JSON [Route]
//	cursor:<name>            string  none       decimal int64, only ever raised (AdvanceCursor)
//	meta:<name>              string  none       a small named value (SetMeta)
//	lease:<name>             hash    caller's   {instance, incarnation, term} of the holder, PEXPIRE ttl
//	term:<name>              string  none       the lease's last term (INCR on every change of holder)
//	work:<key>               string  caller's   the lease term that claimed the work (ClaimWork), SET … PX ttl
//	job:<queue>              hash    none       field job id → JSON [Job]
//	due:<queue>              zset    none       job id, score = NotBefore in unix µs
//	ratelimit:<name>         zset    window     one member per slot taken by TakeRateSlot, score = the Redis
//	                                            server's time in unix µs; members older than the window are
//	                                            dropped on every call, and each granted slot sets PEXPIRE window
//
// Multi-key operations run in MULTI/EXEC or Lua scripts. On Redis Cluster, give the prefix a hash tag (for
// example "{issuebot}:") so that every key lands in one slot.
//
// # Embedded store
//
// The embedded store is one bbolt file with one bucket per concern, mirroring the keys above (snapshots too
// have a bucket of their own). Values that
// expire carry their expiry time; expired entries are invisible to reads and are swept during writes. Rate
// windows are kept in the file too, so that a restarted process knows what its predecessor spent. The file
// lock confines the store to one process, so each Open starts a new session: a lease taken in an earlier
// session is void (its holder is gone).
package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when the requested record does not exist. Check it with errors.Is.
var ErrNotFound = errors.New("store: not found")

// Retention is how long seen issue uuids, the bot's own reply uuids and the seen replies of a deleted issue
// are kept at least.
const Retention = 30 * 24 * time.Hour

// Issue is what the bot remembers about one carded Guance issue: what Guance showed of it, how far its
// replies were read, and its cards (one per chat it went to).
type Issue struct {
	IssueUUID string `json:"issue_uuid"`
	// Cards are the issue's cards, one per chat, in the order they were sent.
	Cards []Card `json:"cards,omitempty"`
	// CardRevision is the revision of what the cards should show; a card whose PatchedRevision is
	// below it is due a re-render.
	CardRevision  int64     `json:"card_revision"`
	UpdateAt      int64     `json:"update_at"` // last seen Guance updateAt (unix s)
	StatusType    int       `json:"status_type"`
	Level         string    `json:"level"`
	Name          string    `json:"name"`
	SyncedReplies int       `json:"synced_replies"`
	LastActivity  time.Time `json:"last_activity"` // last chat activity in one of its threads

	// CreateAt is the issue's Guance createAt (unix s); 0 in records written before it was kept.
	CreateAt int64 `json:"create_at,omitempty"`
	// Snapshot is the issue as last seen in Guance, opaque to the store (the bot re-renders the card from
	// it without asking Guance again). It is JSON.
	Snapshot json.RawMessage `json:"snapshot,omitempty"`
	// RepliesScannedAt is when the issue's replies were last read from Guance; ScannedUpdateAt is the
	// UpdateAt known at that scan, so a later UpdateAt says the issue moved since.
	RepliesScannedAt time.Time `json:"replies_scanned_at,omitzero"`
	ScannedUpdateAt  int64     `json:"scanned_update_at,omitempty"`
	// LastReplyAt is the createAt (unix s) down to which every Guance reply of the issue has been read.
	LastReplyAt int64 `json:"last_reply_at,omitempty"`
	// ScanResume is the next reply page of a scan that has not yet reached LastReplyAt (0: none), and
	// ScanTop the newest createAt that scan read.
	ScanResume int   `json:"scan_resume,omitempty"`
	ScanTop    int64 `json:"scan_top,omitempty"`
	// Refresh asks for the issue to be read again from Guance (it left the open-issue list, or a change
	// entry appeared in its replies).
	Refresh bool `json:"refresh,omitempty"`
	// HintedAt is when Guance's webhook last named the issue; while it is later than the
	// reply scan that served it, the issue's replies are read next.
	HintedAt time.Time `json:"hinted_at,omitzero"`
	// Gone is set once Guance says the issue no longer exists; the bot stops watching it.
	Gone bool `json:"gone,omitempty"`
	// ChangedBy, ChangedAction and ChangedAt describe the last status change made from the chat.
	ChangedBy     string    `json:"changed_by,omitempty"`
	ChangedAction string    `json:"changed_action,omitempty"`
	ChangedAt     time.Time `json:"changed_at,omitzero"`
	// StatusSetAt is when the bot recorded a status change it made in Guance itself (the bot's clock).
	// Guance's updateAt has whole seconds, so issue data asked for before then, with the same updateAt,
	// may be from just before that change.
	StatusSetAt time.Time `json:"status_set_at,omitzero"`
}

// Card is one chat's card of an issue.
type Card struct {
	ChatID    string `json:"chat_id"`
	MessageID string `json:"message_id"`          // om_… of the current card
	ThreadID  string `json:"thread_id,omitempty"` // omt_… once the card has a thread
	// SentAt is when the current card was sent (Feishu patches cards for 14 days).
	SentAt time.Time `json:"sent_at"`
	// PatchedRevision is the issue's CardRevision this card shows.
	PatchedRevision int64 `json:"patched_revision,omitempty"`
	// Digest names the storm digest that holds the issue in this chat; MessageID stays
	// empty until someone posts the issue's own card (its Card button in the digest).
	Digest string `json:"digest,omitempty"`
}

// Card returns the issue's card in chatID, or nil. The pointer is into is.Cards.
func (is *Issue) Card(chatID string) *Card {
	for i := range is.Cards {
		if is.Cards[i].ChatID == chatID {
			return &is.Cards[i]
		}
	}
	return nil
}

// CardOf returns the card whose message or thread is id.
func (is *Issue) CardOf(id string) (Card, bool) {
	for _, c := range is.Cards {
		if id != "" && (c.MessageID == id || c.ThreadID == id) {
			return c, true
		}
	}
	return Card{}, false
}

// FirstSent is when the issue's earliest card still in place was sent (zero without one).
func (is Issue) FirstSent() time.Time {
	var t time.Time
	for _, c := range is.Cards {
		if t.IsZero() || (!c.SentAt.IsZero() && c.SentAt.Before(t)) {
			t = c.SentAt
		}
	}
	return t
}

// LastSent is when the issue's latest card was sent (zero without one).
func (is Issue) LastSent() time.Time {
	var t time.Time
	for _, c := range is.Cards {
		if c.SentAt.After(t) {
			t = c.SentAt
		}
	}
	return t
}

// UnmarshalJSON decodes a record, also one written before an issue could have several cards (its one card's
// fields were part of the record then).
func (is *Issue) UnmarshalJSON(b []byte) error {
	type plain Issue
	var v struct {
		plain
		ChatID          string    `json:"chat_id"`
		CardMessageID   string    `json:"card_message_id"`
		ThreadID        string    `json:"thread_id"`
		SentAt          time.Time `json:"sent_at"`
		PatchedRevision int64     `json:"patched_revision"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*is = Issue(v.plain)
	if len(is.Cards) == 0 && v.CardMessageID != "" {
		is.Cards = []Card{{ChatID: v.ChatID, MessageID: v.CardMessageID, ThreadID: v.ThreadID, SentAt: v.SentAt,
			PatchedRevision: v.PatchedRevision}}
	}
	return nil
}

// setCard puts c into is, replacing the card of the same chat — unless c is only a
// storm digest's entry (no message of its own), which never replaces the chat's card:
// a posted card, or an earlier digest's entry, stays.
func setCard(is *Issue, c Card) {
	if cur := is.Card(c.ChatID); cur != nil {
		if c.MessageID != "" || c.Digest == "" {
			*cur = c
		}
		return
	}
	is.Cards = append(is.Cards, c)
}

// Holder identifies the holder of a lease: Instance is stable across restarts of one replica, Incarnation
// is unique to one process and orders the processes of an instance (a later start has a greater string,
// such as a fixed-width start time).
type Holder struct {
	Instance    string
	Incarnation string
}

// String returns "instance/incarnation".
func (h Holder) String() string { return h.Instance + "/" + h.Incarnation }

// checkHolder rejects holders the stores cannot key unambiguously.
func checkHolder(h Holder) error {
	if err := checkPart("lease instance", h.Instance); err != nil {
		return err
	}
	return checkPart("lease incarnation", h.Incarnation)
}

// Route sends the issues of one Guance channel to one chat, from MinLevel up.
type Route struct {
	ChatID      string `json:"chat_id"`
	ChannelUUID string `json:"channel_uuid"`
	MinLevel    string `json:"min_level"`
}

// Job is one unit of durable work in a queue. It is due once NotBefore has passed; NotBefore is kept with
// microsecond precision.
type Job struct {
	ID        string    `json:"id"`
	Payload   []byte    `json:"payload"`
	NotBefore time.Time `json:"not_before"`
	Attempts  int       `json:"attempts"`
	// Enqueued is when the job was first queued (kept across retries), for ordering.
	Enqueued time.Time `json:"enqueued,omitzero"`
	// Rev changes with every write of the job, so that DeleteJobIf can tell whether it
	// was replaced since it was read. The store keeps it; the writer chooses it.
	Rev uint64 `json:"rev,omitempty"`
}

// Store is the bot's state. Both [Redis] and [Embedded] implement it; every method is safe for concurrent
// use, and the Redis implementation is also safe across replicas.
type Store interface {
	// Kind returns "redis" or "embedded".
	Kind() string
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error

	// PutIssue stores or overwrites the record of is.IssueUUID and, atomically with it, maps the message and
	// thread ids of its cards to the issue and marks the issue seen. Older mappings are kept, so a card moved
	// to a new message keeps its old thread mapped.
	PutIssue(ctx context.Context, is Issue) error
	// AddCard records card c of an issue: when the issue has no record, base becomes its record with c as its
	// one card; otherwise c is added to the record (replacing the card of the same chat, unless c is a storm
	// digest's entry, with no MessageID: that keeps the chat's card) and base is ignored.
	// It has PutIssue's side effects and returns the record written.
	AddCard(ctx context.Context, base Issue, c Card) (Issue, error)
	// GetIssue returns the record of an issue, or ErrNotFound.
	GetIssue(ctx context.Context, issueUUID string) (Issue, error)
	// IssueByMessage returns the record of the issue whose card message id or thread id is
	// messageOrThreadID, or ErrNotFound.
	IssueByMessage(ctx context.Context, messageOrThreadID string) (Issue, error)
	// ListIssues returns every record, sorted by IssueUUID, without its Snapshot (the stores keep snapshots
	// apart, so that a scan of every record stays cheap; GetIssue, IssueByMessage, UpdateIssue and AddCard
	// return it).
	ListIssues(ctx context.Context) ([]Issue, error)
	// ListSummaries returns the summary of every record, sorted by IssueUUID, reading none of the records:
	// what a scan that runs every few seconds should use.
	ListSummaries(ctx context.Context) ([]Summary, error)
	// GetSummary returns the summary of one record, or ErrNotFound, without reading the record.
	GetSummary(ctx context.Context, issueUUID string) (Summary, error)
	// UpdateIssue atomically reads, modifies and writes the record of an issue. It calls fn on a copy of the
	// record and, if fn returns nil, writes the result with the side effects of PutIssue (the cards' possibly
	// new message and thread ids are mapped to the issue, older mappings kept) and returns it. If the issue
	// has no record it returns ErrNotFound without calling fn. If fn returns an error, nothing is written and
	// UpdateIssue returns that error wrapped. fn must not change IssueUUID (UpdateIssue fails if it does),
	// may be called more than once (the Redis implementation retries when the record changes concurrently),
	// should be quick, and must not call the store.
	UpdateIssue(ctx context.Context, issueUUID string, fn func(*Issue) error) (Issue, error)
	// DeleteIssue deletes the record of an issue; its message and thread mappings may stay, and its seen
	// replies are kept for Retention. Deleting a missing record is not an error.
	DeleteIssue(ctx context.Context, issueUUID string) error

	// MarkIssuesSeen records issue uuids as known to the poller (carded or deliberately skipped). They are
	// kept at least Retention.
	MarkIssuesSeen(ctx context.Context, uuids ...string) error
	// IssueSeen reports whether uuid was marked seen.
	IssueSeen(ctx context.Context, uuid string) (bool, error)

	// MarkRepliesSeen records Guance reply uuids of an issue as seen.
	MarkRepliesSeen(ctx context.Context, issueUUID string, replyUUIDs ...string) error
	// ReplySeen reports whether replyUUID was marked seen on the issue.
	ReplySeen(ctx context.Context, issueUUID, replyUUID string) (bool, error)
	// AddOwnReply records a reply the bot itself created, so it is never echoed back; it also marks it seen.
	AddOwnReply(ctx context.Context, issueUUID, replyUUID string) error
	// IsOwnReply reports whether the bot created replyUUID (remembered at least Retention).
	IsOwnReply(ctx context.Context, replyUUID string) (bool, error)

	// Claim returns true if key was not claimed within the last ttl, and claims it for ttl (SET NX PX
	// semantics); it returns false while an earlier claim holds. ttl must be at least 1ms.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Claimed reports whether key is claimed now (a claim taken and not yet expired or released).
	Claimed(ctx context.Context, key string) (bool, error)
	// Release removes a claim so that the work can be claimed and done again. Releasing an unclaimed key is
	// not an error.
	Release(ctx context.Context, key string) error

	// PutRoute inserts or replaces the route of (r.ChatID, r.ChannelUUID).
	PutRoute(ctx context.Context, r Route) error
	// DeleteRoute deletes a route, or returns ErrNotFound.
	DeleteRoute(ctx context.Context, chatID, channelUUID string) error
	// Routes returns every route, sorted by ChatID then ChannelUUID.
	Routes(ctx context.Context) ([]Route, error)

	// Meta returns the named value, or "" when it is unset: small facts the bot learns and keeps across
	// restarts (the Guance API key's account id).
	Meta(ctx context.Context, name string) (string, error)
	// SetMeta sets the named value.
	SetMeta(ctx context.Context, name, value string) error
	// SetMetaFenced sets the named value for the holder of term of the named lease: it sets nothing and
	// returns false once the lease has moved on to a newer term (a deposed leader's late write).
	SetMetaFenced(ctx context.Context, lease string, term int64, name, value string) (bool, error)

	// Cursor returns the named cursor, or 0 when it is unset.
	Cursor(ctx context.Context, name string) (int64, error)
	// AdvanceCursor atomically sets the cursor to max(current, v) and returns the new value. Values beyond
	// ±2^53 are compared approximately by the Redis implementation.
	AdvanceCursor(ctx context.Context, name string, v int64) (int64, error)

	// AcquireLease takes the named lease for h for ttl, or renews it when h already holds it, and returns the
	// lease's term (at least 1); it returns 0 while another instance, or an incarnation of h.Instance that is
	// not older than h's, holds it. The term rises every time the lease changes hands, also when h.Instance
	// comes back with a newer Incarnation: a restarted process takes its own lease at once instead of waiting
	// for its dead predecessor's to expire. Renewing keeps the term.
	AcquireLease(ctx context.Context, name string, h Holder, ttl time.Duration) (term int64, err error)
	// ReleaseLease frees the lease if h holds it; otherwise it does nothing.
	ReleaseLease(ctx context.Context, name string, h Holder) error

	// ClaimWork claims key for the holder of term of the named lease, for at most ttl. It fails (false) when
	// the lease has moved on to a newer term (the caller was deposed) or a claim of term or a newer one
	// holds; a claim of an older term is void, so a dead or deposed holder's claims end as soon as a newer
	// term exists. term must be at least 1.
	ClaimWork(ctx context.Context, lease, key string, term int64, ttl time.Duration) (bool, error)
	// ReleaseWork frees key if it is claimed under term.
	ReleaseWork(ctx context.Context, key string, term int64) error

	// PutJob inserts or replaces the job with j.ID in queue.
	PutJob(ctx context.Context, queue string, j Job) error
	// DueJobs returns up to limit jobs of queue whose NotBefore is at or before now, oldest NotBefore first
	// (ties by ID). limit <= 0 means no limit. The jobs stay queued until DeleteJob.
	DueJobs(ctx context.Context, queue string, now time.Time, limit int) ([]Job, error)
	// DeleteJob removes a job; removing a missing job is not an error.
	DeleteJob(ctx context.Context, queue, id string) error
	// DeleteJobIf removes the job id if its Rev is still rev, and reports whether it did: a job
	// replaced since it was read (queued again while it was being worked on) is kept. A missing
	// job is not an error (false).
	DeleteJobIf(ctx context.Context, queue, id string, rev uint64) (bool, error)
	// CountJobs returns the number of jobs in queue, due or not.
	CountJobs(ctx context.Context, queue string) (int, error)

	// TakeRateSlot takes one slot of the sliding-window rate limit name: at most limit slots within any
	// window. It atomically forgets slots older than window and, if fewer than limit remain, takes one and
	// returns 0; otherwise it takes nothing and returns how long until the oldest slot leaves the window
	// (more than 0, at most window). Callers sharing a store share the limit, and both stores keep the
	// window across restarts (a restarted process knows what its predecessor spent). limit must be at least
	// 1 and window more than 0.
	TakeRateSlot(ctx context.Context, name string, limit int, window time.Duration) (wait time.Duration, err error)
}

// Compile-time checks that both implementations satisfy Store.
var (
	_ Store = (*Redis)(nil)
	_ Store = (*Embedded)(nil)
)

// Option configures a store built by [Open], [OpenRedis], [NewRedis] or [OpenEmbedded].
type Option func(*options)

type options struct {
	prefix      string
	now         func() time.Time
	lockTimeout time.Duration
}

func newOptions(opts []Option) options {
	o := options{prefix: "issuebot:", now: time.Now, lockTimeout: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithPrefix sets the prefix of every Redis key; the default is "issuebot:". The embedded store ignores it.
func WithPrefix(p string) Option {
	return func(o *options) { o.prefix = p }
}

// WithClock sets the clock. The embedded store uses it for every TTL and rate window; the Redis store only
// for the timestamps of seen sets (Redis itself expires claims and leases, and rate windows use the Redis
// server's clock).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithLockTimeout sets how long OpenEmbedded waits for the file lock held by another process before it
// fails; the default is 2s.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// EmbeddedFile is the name of the embedded store's file inside the data directory.
const EmbeddedFile = "issuebot.db"

// Open opens the store chosen by configuration: Redis at redisURL, or, when redisURL is empty, the embedded
// store in dataDir/issuebot.db (creating dataDir if needed).
func Open(ctx context.Context, redisURL, dataDir string, opts ...Option) (Store, error) {
	if redisURL != "" {
		return OpenRedis(ctx, redisURL, opts...)
	}
	if dataDir == "" {
		return nil, errors.New("open embedded store: data directory is empty")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store: create data directory: %w", err)
	}
	return OpenEmbedded(filepath.Join(dataDir, EmbeddedFile), opts...)
}

// routeField is the identity of a route; NUL sorts before any other byte, so ordering by it orders by
// ChatID then ChannelUUID.
func routeField(chatID, channelUUID string) string {
	return chatID + "\x00" + channelUUID
}

// checkRoute rejects routes the stores cannot key unambiguously.
func checkRoute(chatID, channelUUID string) error {
	if chatID == "" {
		return errors.New("empty chat id")
	}
	if strings.ContainsRune(chatID, 0) || strings.ContainsRune(channelUUID, 0) {
		return errors.New("chat id or channel uuid contains NUL")
	}
	return nil
}

// checkRate rejects rate limits that cannot grant anything or have no window.
func checkRate(limit int, window time.Duration) error {
	if limit < 1 {
		return fmt.Errorf("limit %d is below 1", limit)
	}
	if window <= 0 {
		return fmt.Errorf("window %v is not positive", window)
	}
	return nil
}

// encodeRecord splits a record into the JSON kept as the record, without its snapshot, and the snapshot.
func encodeRecord(is Issue) (record, snapshot []byte, err error) {
	snapshot = is.Snapshot
	is.Snapshot = nil
	record, err = json.Marshal(is)
	if err != nil {
		return nil, nil, fmt.Errorf("encode issue record: %w", err)
	}
	return record, snapshot, nil
}

// applyUpdate runs the fn of UpdateIssue on is and checks that it kept the issue uuid. An error of fn's own is
// wrapped, so that callers can match it with errors.Is.
func applyUpdate(is *Issue, fn func(*Issue) error) error {
	uuid := is.IssueUUID
	if err := fn(is); err != nil {
		return fmt.Errorf("update function: %w", err)
	}
	if is.IssueUUID != uuid {
		return fmt.Errorf("update function changed the issue uuid to %q", is.IssueUUID)
	}
	return nil
}

// sortRoutes orders routes by ChatID then ChannelUUID.
func sortRoutes(rs []Route) {
	slices.SortFunc(rs, func(a, b Route) int {
		return cmp.Or(strings.Compare(a.ChatID, b.ChatID), strings.Compare(a.ChannelUUID, b.ChannelUUID))
	})
}
