package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Buckets of the embedded store, one per concern. Times are unix nanoseconds of the store's clock, stored
// as 8 big-endian bytes; an expiry of 0 means "never".
var (
	bucketIssues  = []byte("issues")    // issue uuid → JSON Issue without its snapshot
	bucketSnaps   = []byte("snapshots") // issue uuid → the record's Snapshot
	bucketSums    = []byte("summaries") // issue uuid → the record's Summary (encodeSummary)
	bucketIndex   = []byte("index")     // card message id or thread id → issue uuid
	bucketSeen    = []byte("seen")      // issue uuid → time marked
	bucketReplies = []byte("replies")   // issue uuid NUL reply uuid → expiry
	bucketOwn     = []byte("own")       // reply uuid → time marked
	bucketClaims  = []byte("claims")    // claim key → expiry
	bucketRoutes  = []byte("routes")    // chat id NUL channel uuid → JSON Route
	bucketCursors = []byte("cursors")   // name → int64
	bucketLeases  = []byte("leases")    // name → expiry, session, term, then instance NUL incarnation
	bucketTerms   = []byte("terms")     // lease name → last term; sessionKey → the current session
	bucketWork    = []byte("work")      // work key → expiry, then term
	bucketRates   = []byte("rates")     // rate window name → the times of its slots (unix ns each)
	bucketJobs    = []byte("jobs")      // queue NUL job id → JSON Job
	bucketDue     = []byte("jobs_due")  // queue NUL NotBefore (sortable µs) job id → empty
	bucketMeta    = []byte("meta")      // name → value

	allBuckets = [][]byte{bucketIssues, bucketSnaps, bucketSums, bucketIndex, bucketSeen, bucketReplies, bucketOwn, bucketClaims,
		bucketRoutes, bucketCursors, bucketLeases, bucketTerms, bucketWork, bucketRates, bucketJobs, bucketDue, bucketMeta}
)

// sessionKey holds the number of the current Open in bucketTerms; lease names never contain NUL.
var sessionKey = []byte{0}

// sweepInterval is how often a write also deletes expired claims, leases and old seen entries.
const sweepInterval = 10 * time.Minute

// Embedded is the [Store] kept in one bbolt file, for a single replica. Only one process can open the file
// at a time.
type Embedded struct {
	db  *bolt.DB
	now func() time.Time
	// lastSweep is only touched inside write transactions, which bbolt serializes.
	lastSweep time.Time
	// session numbers the Opens of the file: leases of an earlier one are void.
	session int64

	// sums holds every record's encoded summary in memory (this process is the file's
	// only writer), so that the scans that read them every few seconds touch no page of
	// the file. wmu serializes the write transactions and, through their commit handlers
	// (setSum), their updates of sums.
	wmu  sync.Mutex
	smu  sync.RWMutex
	sums map[string][]byte
	// stop ends the loop that releases the file's mapped pages (see releaseMapped).
	stop chan struct{}
	done chan struct{}
}

// OpenEmbedded opens (creating if needed) the embedded store file at path. If another process holds the file,
// it fails after the lock timeout (2s by default, see [WithLockTimeout]) instead of waiting forever.
func OpenEmbedded(path string, opts ...Option) (*Embedded, error) {
	o := newOptions(opts)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open embedded store %s: file is locked by another process (waited %v): %w",
			path, o.lockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	var session int64
	err = db.Update(func(tx *bolt.Tx) error {
		summarize := tx.Bucket(bucketSums) == nil && tx.Bucket(bucketIssues) != nil
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		terms := tx.Bucket(bucketTerms)
		if v := terms.Get(sessionKey); len(v) == 8 {
			session = decodeInt(v)
		}
		session++
		if summarize { // a file written before summaries were kept
			if err := summarizeAll(tx); err != nil {
				return fmt.Errorf("summarize the records: %w", err)
			}
		}
		return terms.Put(sessionKey, encodeInt(session))
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	e := &Embedded{db: db, now: o.now, session: session, sums: map[string][]byte{},
		stop: make(chan struct{}), done: make(chan struct{})}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSums).ForEach(func(k, v []byte) error {
			e.sums[string(k)] = slices.Clone(v)
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: load summaries: %w", path, err)
	}
	e.releaseMapped()
	go e.releaseLoop()
	return e, nil
}

// releaseEvery is how often the store drops the file's pages from the process's mappings.
const releaseEvery = 10 * time.Second

// releaseLoop releases the mapped pages every releaseEvery until Close.
func (e *Embedded) releaseLoop() {
	defer close(e.done)
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.releaseMapped()
		}
	}
}

// releaseMapped drops the file's pages from this process's memory map. bbolt reads the
// file through a shared read-only mapping, and the kernel maps the neighbours of every
// page read (fault-around), so without this the resident set would grow towards the size
// of the file however little of it the bot uses. The pages stay in the kernel's page
// cache (shared and reclaimable): a later read maps them again without I/O. bbolt writes
// with pwrite, never through the mapping, so nothing is lost. The read transaction keeps
// bbolt from remapping meanwhile.
func (e *Embedded) releaseMapped() {
	_ = e.db.View(func(tx *bolt.Tx) error {
		dropMapped(e.db.Info().Data, tx.Size())
		return nil
	})
}

// Kind returns "embedded".
func (e *Embedded) Kind() string { return "embedded" }

// Path returns the path of the store's file.
func (e *Embedded) Path() string { return e.db.Path() }

// Ping checks that the file is open and readable.
func (e *Embedded) Ping(ctx context.Context) error {
	if err := e.view(ctx, func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping embedded store: %w", err)
	}
	return nil
}

// Close closes the file.
func (e *Embedded) Close() error {
	select {
	case <-e.stop:
	default:
		close(e.stop)
		<-e.done
	}
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("close embedded store: %w", err)
	}
	return nil
}

func (e *Embedded) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.db.View(fn)
}

// update runs fn in a write transaction and, every sweepInterval, sweeps expired entries in the same
// transaction.
func (e *Embedded) update(ctx context.Context, fn func(tx *bolt.Tx, now time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return e.db.Update(func(tx *bolt.Tx) error {
		now := e.now()
		if err := fn(tx, now); err != nil {
			return err
		}
		if now.Sub(e.lastSweep) < sweepInterval {
			return nil
		}
		if err := sweep(tx, now); err != nil {
			return fmt.Errorf("sweep expired entries: %w", err)
		}
		e.lastSweep = now
		return nil
	})
}

// setSum updates the in-memory summary of an issue once tx commits (nil: deleted).
func (e *Embedded) setSum(tx *bolt.Tx, issueUUID string, sum []byte) {
	tx.OnCommit(func() {
		e.smu.Lock()
		defer e.smu.Unlock()
		if sum == nil {
			delete(e.sums, issueUUID)
		} else {
			e.sums[issueUUID] = sum
		}
	})
}

// sweep deletes expired claims, leases and replies, and seen marks older than Retention.
func sweep(tx *bolt.Tx, now time.Time) error {
	expired := func(v []byte) bool { return isExpired(v, now) }
	old := func(v []byte) bool { return len(v) >= 8 && decodeTime(v).Before(now.Add(-Retention)) }
	for _, s := range []struct {
		bucket []byte
		drop   func([]byte) bool
	}{
		{bucketClaims, expired},
		{bucketLeases, expired},
		{bucketWork, expired},
		{bucketReplies, expired},
		{bucketSeen, old},
		{bucketOwn, old},
	} {
		b := tx.Bucket(s.bucket)
		var doomed [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if s.drop(v) {
				doomed = append(doomed, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

func encodeInt(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeInt(b []byte) int64 { return int64(binary.BigEndian.Uint64(b[:8])) }

func encodeTime(t time.Time) []byte { return encodeInt(t.UnixNano()) }

func decodeTime(b []byte) time.Time { return time.Unix(0, decodeInt(b)) }

// expiryAt encodes the expiry now+ttl, or 0 ("never") when ttl is 0.
func expiryAt(now time.Time, ttl time.Duration) []byte {
	if ttl == 0 {
		return encodeInt(0)
	}
	return encodeTime(now.Add(ttl))
}

// isExpired reports whether a value led by an expiry has expired at now.
func isExpired(v []byte, now time.Time) bool {
	if len(v) < 8 {
		return true
	}
	exp := decodeInt(v)
	return exp != 0 && exp <= now.UnixNano()
}

// live reports whether a value led by an expiry exists and has not expired.
func live(v []byte, now time.Time) bool { return v != nil && !isExpired(v, now) }

func checkPart(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if strings.ContainsRune(s, 0) {
		return fmt.Errorf("%s contains NUL", what)
	}
	return nil
}

func replyKey(issueUUID, replyUUID string) []byte {
	return []byte(issueUUID + "\x00" + replyUUID)
}

// setReplyExpiry sets the expiry of every seen reply of an issue.
func setReplyExpiry(tx *bolt.Tx, issueUUID string, exp []byte) error {
	b := tx.Bucket(bucketReplies)
	prefix := []byte(issueUUID + "\x00")
	var ks [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ks = append(ks, bytes.Clone(k))
	}
	for _, k := range ks {
		if err := b.Put(k, exp); err != nil {
			return err
		}
	}
	return nil
}

// PutIssue stores the record, its message and thread mappings, and the seen mark in one transaction.
func (e *Embedded) PutIssue(ctx context.Context, is Issue) error {
	if err := checkPart("issue uuid", is.IssueUUID); err != nil {
		return fmt.Errorf("put issue: %w", err)
	}
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		return e.putIssue(tx, now, is)
	})
	if err != nil {
		return fmt.Errorf("put issue %s: %w", is.IssueUUID, err)
	}
	return nil
}

// putIssue writes the record of is (its snapshot and summary apart), its message and thread mappings and its
// seen mark. e.wmu is held.
func (e *Embedded) putIssue(tx *bolt.Tx, now time.Time, is Issue) error {
	data, snap, err := encodeRecord(is)
	if err != nil {
		return err
	}
	if len(snap) > 0 {
		err = tx.Bucket(bucketSnaps).Put([]byte(is.IssueUUID), snap)
	} else {
		err = tx.Bucket(bucketSnaps).Delete([]byte(is.IssueUUID))
	}
	if err != nil {
		return err
	}
	issues := tx.Bucket(bucketIssues)
	if issues.Get([]byte(is.IssueUUID)) == nil {
		// A record that comes back keeps its seen replies for good again (see DeleteIssue).
		if err := setReplyExpiry(tx, is.IssueUUID, expiryAt(now, 0)); err != nil {
			return err
		}
	}
	if err := issues.Put([]byte(is.IssueUUID), data); err != nil {
		return err
	}
	sum := encodeSummary(is.Summary())
	if err := tx.Bucket(bucketSums).Put([]byte(is.IssueUUID), sum); err != nil {
		return err
	}
	e.setSum(tx, is.IssueUUID, sum)
	index := tx.Bucket(bucketIndex)
	for _, c := range is.Cards {
		for _, id := range []string{c.MessageID, c.ThreadID} {
			if id == "" {
				continue
			}
			if err := index.Put([]byte(id), []byte(is.IssueUUID)); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketSeen).Put([]byte(is.IssueUUID), encodeTime(now))
}

func getIssue(tx *bolt.Tx, issueUUID string) (Issue, error) {
	data := tx.Bucket(bucketIssues).Get([]byte(issueUUID))
	if data == nil {
		return Issue{}, ErrNotFound
	}
	is, err := decodeIssue(data)
	if err != nil {
		return Issue{}, err
	}
	if snap := tx.Bucket(bucketSnaps).Get([]byte(issueUUID)); snap != nil {
		is.Snapshot = append(json.RawMessage(nil), snap...) // (a record written before snapshots were kept apart has it inline)
	}
	return is, nil
}

// GetIssue returns the record of an issue, or ErrNotFound.
func (e *Embedded) GetIssue(ctx context.Context, issueUUID string) (Issue, error) {
	var is Issue
	err := e.view(ctx, func(tx *bolt.Tx) error {
		var err error
		is, err = getIssue(tx, issueUUID)
		return err
	})
	if err != nil {
		return Issue{}, fmt.Errorf("get issue %s: %w", issueUUID, err)
	}
	return is, nil
}

// IssueByMessage returns the record mapped from a card message id or thread id, or ErrNotFound.
func (e *Embedded) IssueByMessage(ctx context.Context, messageOrThreadID string) (Issue, error) {
	var is Issue
	err := e.view(ctx, func(tx *bolt.Tx) error {
		uuid := tx.Bucket(bucketIndex).Get([]byte(messageOrThreadID))
		if uuid == nil {
			return ErrNotFound
		}
		var err error
		is, err = getIssue(tx, string(uuid))
		if err != nil {
			return fmt.Errorf("issue %s: %w", uuid, err)
		}
		return nil
	})
	if err != nil {
		return Issue{}, fmt.Errorf("issue by message %s: %w", messageOrThreadID, err)
	}
	return is, nil
}

// AddCard records a card of an issue, creating its record from base when it has none, in one transaction.
func (e *Embedded) AddCard(ctx context.Context, base Issue, c Card) (Issue, error) {
	var out Issue
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		is, err := getIssue(tx, base.IssueUUID)
		if errors.Is(err, ErrNotFound) {
			is, err = base, nil
			is.Cards = nil
		}
		if err != nil {
			return err
		}
		setCard(&is, c)
		if err := e.putIssue(tx, now, is); err != nil {
			return err
		}
		out = is
		return nil
	})
	if err != nil {
		return Issue{}, fmt.Errorf("add card of issue %s in chat %s: %w", base.IssueUUID, c.ChatID, err)
	}
	return out, nil
}

// UpdateIssue reads the record, applies fn and writes the result with PutIssue's side effects, all in one
// write transaction, so fn runs exactly once per call. fn runs while the transaction holds the file's write
// lock: it must be quick and must not call the store, or it deadlocks.
func (e *Embedded) UpdateIssue(ctx context.Context, issueUUID string, fn func(*Issue) error) (Issue, error) {
	var out Issue
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		// decodeIssue copies the value out of bbolt's memory, so fn gets a copy that may outlive tx.
		is, err := getIssue(tx, issueUUID)
		if err != nil {
			return err
		}
		if err := applyUpdate(&is, fn); err != nil {
			return err
		}
		if err := e.putIssue(tx, now, is); err != nil {
			return err
		}
		out = is
		return nil
	})
	if err != nil {
		return Issue{}, fmt.Errorf("update issue %s: %w", issueUUID, err)
	}
	return out, nil
}

// ListIssues returns every record, sorted by IssueUUID (the bucket's key order).
func (e *Embedded) ListIssues(ctx context.Context) ([]Issue, error) {
	var out []Issue
	err := e.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIssues).ForEach(func(k, v []byte) error {
			is, err := decodeIssue(v)
			if err != nil {
				return fmt.Errorf("issue %s: %w", k, err)
			}
			is.Snapshot = nil
			out = append(out, is)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list issues: %w", err)
	}
	return out, nil
}

// ListSummaries returns the summary of every record, sorted by IssueUUID, from memory.
func (e *Embedded) ListSummaries(ctx context.Context) ([]Summary, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list summaries: %w", err)
	}
	e.smu.RLock()
	var out []Summary
	if len(e.sums) > 0 {
		out = make([]Summary, 0, len(e.sums))
	}
	for uuid, v := range e.sums {
		s, err := decodeSummary(uuid, v)
		if err != nil {
			e.smu.RUnlock()
			return nil, fmt.Errorf("list summaries: %w", err)
		}
		out = append(out, s)
	}
	e.smu.RUnlock()
	slices.SortFunc(out, func(a, b Summary) int { return strings.Compare(a.IssueUUID, b.IssueUUID) })
	return out, nil
}

// GetSummary returns the summary of one record, or ErrNotFound, from memory.
func (e *Embedded) GetSummary(ctx context.Context, issueUUID string) (Summary, error) {
	if err := ctx.Err(); err != nil {
		return Summary{}, fmt.Errorf("get the summary of issue %s: %w", issueUUID, err)
	}
	e.smu.RLock()
	v, ok := e.sums[issueUUID]
	e.smu.RUnlock()
	if !ok {
		return Summary{}, fmt.Errorf("get the summary of issue %s: %w", issueUUID, ErrNotFound)
	}
	return decodeSummary(issueUUID, v)
}

// summarizeAll writes the summary of every record.
func summarizeAll(tx *bolt.Tx) error {
	sums := tx.Bucket(bucketSums)
	return tx.Bucket(bucketIssues).ForEach(func(k, v []byte) error {
		is, err := decodeIssue(v)
		if err != nil {
			return fmt.Errorf("issue %s: %w", k, err)
		}
		is.IssueUUID = string(k)
		return sums.Put(k, encodeSummary(is.Summary()))
	})
}

// DeleteIssue deletes the record and lets the issue's seen replies expire after Retention.
func (e *Embedded) DeleteIssue(ctx context.Context, issueUUID string) error {
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		issues := tx.Bucket(bucketIssues)
		if issues.Get([]byte(issueUUID)) == nil {
			return nil
		}
		if err := issues.Delete([]byte(issueUUID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSnaps).Delete([]byte(issueUUID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSums).Delete([]byte(issueUUID)); err != nil {
			return err
		}
		e.setSum(tx, issueUUID, nil)
		return setReplyExpiry(tx, issueUUID, expiryAt(now, Retention))
	})
	if err != nil {
		return fmt.Errorf("delete issue %s: %w", issueUUID, err)
	}
	return nil
}

// MarkIssuesSeen records issue uuids as seen.
func (e *Embedded) MarkIssuesSeen(ctx context.Context, uuids ...string) error {
	if len(uuids) == 0 {
		return nil
	}
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		b := tx.Bucket(bucketSeen)
		for _, u := range uuids {
			if err := b.Put([]byte(u), encodeTime(now)); err != nil {
				return fmt.Errorf("issue %q: %w", u, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark %d issues seen: %w", len(uuids), err)
	}
	return nil
}

// has reports whether key exists in bucket.
func (e *Embedded) has(ctx context.Context, bucket []byte, key string) (bool, error) {
	var ok bool
	err := e.view(ctx, func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucket).Get([]byte(key)) != nil
		return nil
	})
	return ok, err
}

// IssueSeen reports whether uuid was marked seen.
func (e *Embedded) IssueSeen(ctx context.Context, uuid string) (bool, error) {
	ok, err := e.has(ctx, bucketSeen, uuid)
	if err != nil {
		return false, fmt.Errorf("check issue %s seen: %w", uuid, err)
	}
	return ok, nil
}

// markReplies records reply uuids as seen on an issue; an issue without a record gets the expiry a deleted
// issue's replies get.
func markReplies(tx *bolt.Tx, now time.Time, issueUUID string, replyUUIDs ...string) error {
	exp := expiryAt(now, 0)
	if tx.Bucket(bucketIssues).Get([]byte(issueUUID)) == nil {
		exp = expiryAt(now, Retention)
	}
	b := tx.Bucket(bucketReplies)
	for _, r := range replyUUIDs {
		if err := b.Put(replyKey(issueUUID, r), exp); err != nil {
			return fmt.Errorf("reply %q: %w", r, err)
		}
	}
	return nil
}

// MarkRepliesSeen records reply uuids as seen on an issue.
func (e *Embedded) MarkRepliesSeen(ctx context.Context, issueUUID string, replyUUIDs ...string) error {
	if len(replyUUIDs) == 0 {
		return nil
	}
	if err := checkPart("issue uuid", issueUUID); err != nil {
		return fmt.Errorf("mark replies seen: %w", err)
	}
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		return markReplies(tx, now, issueUUID, replyUUIDs...)
	})
	if err != nil {
		return fmt.Errorf("mark %d replies of issue %s seen: %w", len(replyUUIDs), issueUUID, err)
	}
	return nil
}

// ReplySeen reports whether replyUUID was marked seen on the issue.
func (e *Embedded) ReplySeen(ctx context.Context, issueUUID, replyUUID string) (bool, error) {
	var ok bool
	err := e.view(ctx, func(tx *bolt.Tx) error {
		ok = live(tx.Bucket(bucketReplies).Get(replyKey(issueUUID, replyUUID)), e.now())
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check reply %s of issue %s seen: %w", replyUUID, issueUUID, err)
	}
	return ok, nil
}

// AddOwnReply records a reply of the bot's own and marks it seen on the issue.
func (e *Embedded) AddOwnReply(ctx context.Context, issueUUID, replyUUID string) error {
	if err := checkPart("issue uuid", issueUUID); err != nil {
		return fmt.Errorf("add own reply %s: %w", replyUUID, err)
	}
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		if err := tx.Bucket(bucketOwn).Put([]byte(replyUUID), encodeTime(now)); err != nil {
			return err
		}
		return markReplies(tx, now, issueUUID, replyUUID)
	})
	if err != nil {
		return fmt.Errorf("add own reply %s of issue %s: %w", replyUUID, issueUUID, err)
	}
	return nil
}

// IsOwnReply reports whether the bot created replyUUID.
func (e *Embedded) IsOwnReply(ctx context.Context, replyUUID string) (bool, error) {
	ok, err := e.has(ctx, bucketOwn, replyUUID)
	if err != nil {
		return false, fmt.Errorf("check own reply %s: %w", replyUUID, err)
	}
	return ok, nil
}

// Claim claims key for ttl unless a live claim exists.
func (e *Embedded) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("claim %s: ttl %v is below 1ms", key, ttl)
	}
	var ok bool
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		b := tx.Bucket(bucketClaims)
		if live(b.Get([]byte(key)), now) {
			return nil
		}
		ok = true
		return b.Put([]byte(key), expiryAt(now, ttl))
	})
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	return ok, nil
}

// Claimed reports whether a live claim on key exists.
func (e *Embedded) Claimed(ctx context.Context, key string) (bool, error) {
	var ok bool
	err := e.view(ctx, func(tx *bolt.Tx) error {
		ok = live(tx.Bucket(bucketClaims).Get([]byte(key)), e.now())
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check claim %s: %w", key, err)
	}
	return ok, nil
}

// Release deletes a claim.
func (e *Embedded) Release(ctx context.Context, key string) error {
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		return tx.Bucket(bucketClaims).Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("release claim %s: %w", key, err)
	}
	return nil
}

// PutRoute inserts or replaces a route.
func (e *Embedded) PutRoute(ctx context.Context, rt Route) error {
	if err := checkRoute(rt.ChatID, rt.ChannelUUID); err != nil {
		return fmt.Errorf("put route: %w", err)
	}
	data, err := json.Marshal(rt)
	if err != nil {
		return fmt.Errorf("put route %s/%s: encode: %w", rt.ChatID, rt.ChannelUUID, err)
	}
	err = e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		return tx.Bucket(bucketRoutes).Put([]byte(routeField(rt.ChatID, rt.ChannelUUID)), data)
	})
	if err != nil {
		return fmt.Errorf("put route %s/%s: %w", rt.ChatID, rt.ChannelUUID, err)
	}
	return nil
}

// DeleteRoute deletes a route, or returns ErrNotFound.
func (e *Embedded) DeleteRoute(ctx context.Context, chatID, channelUUID string) error {
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		b := tx.Bucket(bucketRoutes)
		k := []byte(routeField(chatID, channelUUID))
		if b.Get(k) == nil {
			return ErrNotFound
		}
		return b.Delete(k)
	})
	if err != nil {
		return fmt.Errorf("delete route %s/%s: %w", chatID, channelUUID, err)
	}
	return nil
}

// Routes returns every route, sorted by ChatID then ChannelUUID.
func (e *Embedded) Routes(ctx context.Context) ([]Route, error) {
	var out []Route
	err := e.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRoutes).ForEach(func(k, v []byte) error {
			var rt Route
			if err := json.Unmarshal(v, &rt); err != nil {
				return fmt.Errorf("decode %q: %w", k, err)
			}
			out = append(out, rt)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	sortRoutes(out) // key order already matches; sorting keeps the contract explicit
	return out, nil
}

// Meta returns the named value, or "" when it is unset.
func (e *Embedded) Meta(ctx context.Context, name string) (string, error) {
	var v string
	err := e.view(ctx, func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get([]byte(name)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("get meta %s: %w", name, err)
	}
	return v, nil
}

// SetMeta sets the named value.
func (e *Embedded) SetMeta(ctx context.Context, name, value string) error {
	if err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		return tx.Bucket(bucketMeta).Put([]byte(name), []byte(value))
	}); err != nil {
		return fmt.Errorf("set meta %s: %w", name, err)
	}
	return nil
}

// SetMetaFenced sets the named value unless the lease moved on from term.
func (e *Embedded) SetMetaFenced(ctx context.Context, lease string, term int64, name, value string) (bool, error) {
	if term < 1 {
		return false, fmt.Errorf("set meta %s: term %d is below 1", name, term)
	}
	var ok bool
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		if v := tx.Bucket(bucketTerms).Get([]byte(lease)); len(v) == 8 && decodeInt(v) > term {
			return nil // deposed
		}
		ok = true
		return tx.Bucket(bucketMeta).Put([]byte(name), []byte(value))
	})
	if err != nil {
		return false, fmt.Errorf("set meta %s for term %d: %w", name, term, err)
	}
	return ok, nil
}

// Cursor returns the named cursor, or 0 when it is unset.
func (e *Embedded) Cursor(ctx context.Context, name string) (int64, error) {
	var v int64
	err := e.view(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketCursors).Get([]byte(name)); len(b) == 8 {
			v = decodeInt(b)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("get cursor %s: %w", name, err)
	}
	return v, nil
}

// AdvanceCursor sets the cursor to max(current, v) and returns the new value.
func (e *Embedded) AdvanceCursor(ctx context.Context, name string, v int64) (int64, error) {
	var cur int64
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		b := tx.Bucket(bucketCursors)
		if raw := b.Get([]byte(name)); len(raw) == 8 {
			cur = decodeInt(raw)
		}
		if v <= cur {
			return nil
		}
		cur = v
		return b.Put([]byte(name), encodeInt(v))
	})
	if err != nil {
		return 0, fmt.Errorf("advance cursor %s to %d: %w", name, v, err)
	}
	return cur, nil
}

// lease is a decoded lease value.
type lease struct {
	session, term int64
	holder        Holder
}

func decodeLease(v []byte) (lease, bool) {
	if len(v) < 24 {
		return lease{}, false
	}
	inst, inc, ok := strings.Cut(string(v[24:]), "\x00")
	if !ok {
		return lease{}, false
	}
	return lease{session: decodeInt(v[8:]), term: decodeInt(v[16:]), holder: Holder{Instance: inst, Incarnation: inc}}, true
}

// AcquireLease takes the named lease for h, or renews it if h holds it, and returns its term (0: another
// instance holds it). A lease taken before this Open is free: the file lock says its holder is gone.
func (e *Embedded) AcquireLease(ctx context.Context, name string, h Holder, ttl time.Duration) (int64, error) {
	if err := checkHolder(h); err != nil {
		return 0, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	if err := checkPart("lease name", name); err != nil {
		return 0, fmt.Errorf("acquire lease: %w", err)
	}
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("acquire lease %s: ttl %v is below 1ms", name, ttl)
	}
	var term int64
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		b := tx.Bucket(bucketLeases)
		cur := b.Get([]byte(name))
		l, ok := decodeLease(cur)
		held := ok && live(cur, now) && l.session == e.session
		switch {
		case held && l.holder == h:
			term = l.term
		case held && (l.holder.Instance != h.Instance || h.Incarnation <= l.holder.Incarnation):
			return nil
		default:
			terms := tx.Bucket(bucketTerms)
			if v := terms.Get([]byte(name)); len(v) == 8 {
				term = decodeInt(v)
			}
			term++
			if err := terms.Put([]byte(name), encodeInt(term)); err != nil {
				return err
			}
		}
		v := append(expiryAt(now, ttl), encodeInt(e.session)...)
		v = append(append(v, encodeInt(term)...), h.Instance+"\x00"+h.Incarnation...)
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return 0, fmt.Errorf("acquire lease %s for %s: %w", name, h, err)
	}
	return term, nil
}

// ReleaseLease frees the lease if h holds it.
func (e *Embedded) ReleaseLease(ctx context.Context, name string, h Holder) error {
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		b := tx.Bucket(bucketLeases)
		cur := b.Get([]byte(name))
		if l, ok := decodeLease(cur); ok && live(cur, now) && l.session == e.session && l.holder == h {
			return b.Delete([]byte(name))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release lease %s for %s: %w", name, h, err)
	}
	return nil
}

// ClaimWork claims key for term of lease unless the lease moved on or a live claim of term or a newer term
// holds.
func (e *Embedded) ClaimWork(ctx context.Context, lease, key string, term int64, ttl time.Duration) (bool, error) {
	if term < 1 {
		return false, fmt.Errorf("claim work %s: term %d is below 1", key, term)
	}
	if ttl < time.Millisecond {
		return false, fmt.Errorf("claim work %s: ttl %v is below 1ms", key, ttl)
	}
	var ok bool
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		if v := tx.Bucket(bucketTerms).Get([]byte(lease)); len(v) == 8 && decodeInt(v) > term {
			return nil // deposed
		}
		b := tx.Bucket(bucketWork)
		if cur := b.Get([]byte(key)); live(cur, now) && len(cur) >= 16 && decodeInt(cur[8:]) >= term {
			return nil
		}
		ok = true
		return b.Put([]byte(key), append(expiryAt(now, ttl), encodeInt(term)...))
	})
	if err != nil {
		return false, fmt.Errorf("claim work %s for term %d: %w", key, term, err)
	}
	return ok, nil
}

// ReleaseWork frees key if term claimed it.
func (e *Embedded) ReleaseWork(ctx context.Context, key string, term int64) error {
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		b := tx.Bucket(bucketWork)
		if cur := b.Get([]byte(key)); len(cur) >= 16 && decodeInt(cur[8:]) == term {
			return b.Delete([]byte(key))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release work %s of term %d: %w", key, term, err)
	}
	return nil
}

func jobKey(queue, id string) []byte { return []byte(queue + "\x00" + id) }

// dueKey orders a queue's jobs by NotBefore, then id. Flipping the sign bit makes the big-endian bytes of
// negative times (such as the zero time.Time) sort before positive ones.
func dueKey(queue string, notBefore time.Time, id string) []byte {
	k := []byte(queue + "\x00")
	k = binary.BigEndian.AppendUint64(k, uint64(notBefore.UnixMicro())^(1<<63))
	return append(k, id...)
}

// PutJob stores the job and (re)schedules it in one transaction.
func (e *Embedded) PutJob(ctx context.Context, queue string, j Job) error {
	if err := checkPart("queue", queue); err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	if j.ID == "" {
		return fmt.Errorf("put job in %s: empty job id", queue)
	}
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("put job %s in %s: encode: %w", j.ID, queue, err)
	}
	err = e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		jobs, due := tx.Bucket(bucketJobs), tx.Bucket(bucketDue)
		if old := jobs.Get(jobKey(queue, j.ID)); old != nil {
			var oj Job
			if err := json.Unmarshal(old, &oj); err != nil {
				return fmt.Errorf("decode previous job: %w", err)
			}
			if err := due.Delete(dueKey(queue, oj.NotBefore, oj.ID)); err != nil {
				return err
			}
		}
		if err := jobs.Put(jobKey(queue, j.ID), data); err != nil {
			return err
		}
		return due.Put(dueKey(queue, j.NotBefore, j.ID), nil)
	})
	if err != nil {
		return fmt.Errorf("put job %s in %s: %w", j.ID, queue, err)
	}
	return nil
}

// DueJobs returns up to limit due jobs, oldest NotBefore first.
func (e *Embedded) DueJobs(ctx context.Context, queue string, now time.Time, limit int) ([]Job, error) {
	if err := checkPart("queue", queue); err != nil {
		return nil, fmt.Errorf("list due jobs: %w", err)
	}
	var out []Job
	err := e.view(ctx, func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		prefix := []byte(queue + "\x00")
		end := dueKey(queue, now, "")
		c := tx.Bucket(bucketDue).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if bytes.Compare(k[:len(end)], end) > 0 || (limit > 0 && len(out) >= limit) {
				break
			}
			id := string(k[len(end):])
			data := jobs.Get(jobKey(queue, id))
			if data == nil {
				continue
			}
			var j Job
			if err := json.Unmarshal(data, &j); err != nil {
				return fmt.Errorf("decode job %s: %w", id, err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list due jobs in %s: %w", queue, err)
	}
	return out, nil
}

// DeleteJobIf removes a job whose Rev is still rev, in one transaction.
func (e *Embedded) DeleteJobIf(ctx context.Context, queue, id string, rev uint64) (bool, error) {
	return e.deleteJob(ctx, queue, id, func(j Job) bool { return j.Rev == rev })
}

// DeleteJob removes a job from the queue.
func (e *Embedded) DeleteJob(ctx context.Context, queue, id string) error {
	_, err := e.deleteJob(ctx, queue, id, func(Job) bool { return true })
	return err
}

// deleteJob removes the job id if it exists and ok approves of it, and reports whether
// it did.
func (e *Embedded) deleteJob(ctx context.Context, queue, id string, ok func(Job) bool) (bool, error) {
	if err := checkPart("queue", queue); err != nil {
		return false, fmt.Errorf("delete job %s: %w", id, err)
	}
	var deleted bool
	err := e.update(ctx, func(tx *bolt.Tx, _ time.Time) error {
		jobs := tx.Bucket(bucketJobs)
		old := jobs.Get(jobKey(queue, id))
		if old == nil {
			return nil
		}
		var oj Job
		if err := json.Unmarshal(old, &oj); err != nil {
			return fmt.Errorf("decode job: %w", err)
		}
		if !ok(oj) {
			return nil
		}
		if err := tx.Bucket(bucketDue).Delete(dueKey(queue, oj.NotBefore, id)); err != nil {
			return err
		}
		deleted = true
		return jobs.Delete(jobKey(queue, id))
	})
	if err != nil {
		return false, fmt.Errorf("delete job %s from %s: %w", id, queue, err)
	}
	return deleted, nil
}

// CountJobs returns the number of jobs in the queue.
func (e *Embedded) CountJobs(ctx context.Context, queue string) (int, error) {
	if err := checkPart("queue", queue); err != nil {
		return 0, fmt.Errorf("count jobs: %w", err)
	}
	var n int
	err := e.view(ctx, func(tx *bolt.Tx) error {
		prefix := []byte(queue + "\x00")
		c := tx.Bucket(bucketJobs).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count jobs in %s: %w", queue, err)
	}
	return n, nil
}

// TakeRateSlot takes a slot of the rate limit name by the store's clock, in one write transaction. The
// window is kept in the file, so that a restarted process does not spend again what its predecessor spent
// in the same window. A slot time in the future (the clock went back) counts as now.
func (e *Embedded) TakeRateSlot(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error) {
	if err := checkRate(limit, window); err != nil {
		return 0, fmt.Errorf("take rate slot %s: %w", name, err)
	}
	var wait time.Duration
	err := e.update(ctx, func(tx *bolt.Tx, now time.Time) error {
		b := tx.Bucket(bucketRates)
		v := b.Get([]byte(name))
		slots := make([]time.Time, 0, len(v)/8+1)
		for i := 0; i+8 <= len(v); i += 8 {
			t := decodeTime(v[i:])
			if t.After(now) {
				t = now
			}
			if now.Sub(t) < window {
				slots = append(slots, t)
			}
		}
		if len(slots) < limit {
			slots = append(slots, now)
			wait = 0
		} else {
			wait = min(max(slices.MinFunc(slots, time.Time.Compare).Add(window).Sub(now), 1), window)
		}
		out := make([]byte, 0, 8*len(slots))
		for _, t := range slots {
			out = append(out, encodeTime(t)...)
		}
		return b.Put([]byte(name), out)
	})
	if err != nil {
		return 0, fmt.Errorf("take rate slot %s: %w", name, err)
	}
	return wait, nil
}
