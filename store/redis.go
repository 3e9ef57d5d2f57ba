package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the [Store] backed by Redis, for one or more replicas sharing state.
type Redis struct {
	client redis.UniversalClient
	keys   keys
	now    func() time.Time
	// summarized is set once the summaries:built marker was seen or set.
	summarized atomic.Bool
}

// NewRedis returns a store over an already configured client. Close closes the client.
func NewRedis(client redis.UniversalClient, opts ...Option) *Redis {
	o := newOptions(opts)
	return &Redis{client: client, keys: keys{prefix: o.prefix}, now: o.now}
}

// OpenRedis connects to the Redis server at rawURL (redis://, rediss:// or unix://) and pings it. Errors never
// contain the URL's password.
func OpenRedis(ctx context.Context, rawURL string, opts ...Option) (*Redis, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Error repeats the whole URL, password included; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, redact(fmt.Errorf("open redis: parse url: %w", err), rawURL, urlPassword(rawURL))
	}
	r := NewRedis(redis.NewClient(o), opts...)
	if err := r.client.Ping(ctx).Err(); err != nil {
		_ = r.client.Close()
		return nil, redact(fmt.Errorf("open redis: ping %s: %w", o.Addr, err), o.Password)
	}
	return r, nil
}

// urlPassword returns the password of rawURL, or "" if it has none or does not parse.
func urlPassword(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}

// redact replaces every occurrence of the secrets in err's message. It keeps the error chain only when
// nothing had to be replaced.
func redact(err error, secrets ...string) error {
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// Kind returns "redis".
func (r *Redis) Kind() string { return "redis" }

// Prefix returns the prefix of every key the store uses.
func (r *Redis) Prefix() string { return r.keys.prefix }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// Close closes the Redis client.
func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("close redis: %w", err)
	}
	return nil
}

func unixMilli(t time.Time) float64 { return float64(t.UnixMilli()) }

// seenCutoff is the score below which seen-set members are older than Retention.
func (r *Redis) seenCutoff() string {
	return strconv.FormatInt(r.now().Add(-Retention).UnixMilli(), 10)
}

// PutIssue stores the record, its message and thread mappings, and the seen mark in one transaction.
func (r *Redis) PutIssue(ctx context.Context, is Issue) error {
	if is.IssueUUID == "" {
		return errors.New("put issue: empty issue uuid")
	}
	data, snap, err := encodeRecord(is)
	if err != nil {
		return fmt.Errorf("put issue %s: %w", is.IssueUUID, err)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		r.queuePutIssue(ctx, p, is, data, snap)
		return nil
	})
	if err != nil {
		return fmt.Errorf("put issue %s: %w", is.IssueUUID, err)
	}
	return nil
}

// queuePutIssue queues the writes of PutIssue on p: the record data of is and its snapshot apart, its
// message and thread mappings, the issue set, the seen mark, and no TTL on its seen replies.
func (r *Redis) queuePutIssue(ctx context.Context, p redis.Pipeliner, is Issue, data, snap []byte) {
	p.Set(ctx, r.keys.issue(is.IssueUUID), data, 0)
	if len(snap) > 0 {
		p.Set(ctx, r.keys.snapshot(is.IssueUUID), []byte(snap), 0)
	} else {
		p.Del(ctx, r.keys.snapshot(is.IssueUUID))
	}
	p.SAdd(ctx, r.keys.issues(), is.IssueUUID)
	p.HSet(ctx, r.keys.summaries(), is.IssueUUID, encodeSummary(is.Summary()))
	for _, c := range is.Cards {
		for _, id := range []string{c.MessageID, c.ThreadID} {
			if id != "" {
				p.Set(ctx, r.keys.msg(id), is.IssueUUID, 0)
			}
		}
	}
	p.ZAdd(ctx, r.keys.seenIssues(), redis.Z{Score: unixMilli(r.now()), Member: is.IssueUUID})
	p.ZRemRangeByScore(ctx, r.keys.seenIssues(), "-inf", "("+r.seenCutoff())
	p.Persist(ctx, r.keys.replies(is.IssueUUID))
}

// GetIssue returns the record of an issue, or ErrNotFound.
func (r *Redis) GetIssue(ctx context.Context, issueUUID string) (Issue, error) {
	is, err := r.getIssue(ctx, issueUUID)
	if err != nil {
		return Issue{}, fmt.Errorf("get issue %s: %w", issueUUID, err)
	}
	return is, nil
}

func (r *Redis) getIssue(ctx context.Context, issueUUID string) (Issue, error) {
	return r.readIssue(ctx, r.client, issueUUID)
}

// readIssue reads a record and its snapshot with c (the client, or a transaction watching both keys).
func (r *Redis) readIssue(ctx context.Context, c redis.Cmdable, issueUUID string) (Issue, error) {
	vals, err := c.MGet(ctx, r.keys.issue(issueUUID), r.keys.snapshot(issueUUID)).Result()
	if err != nil {
		return Issue{}, err
	}
	data, ok := vals[0].(string)
	if !ok {
		return Issue{}, ErrNotFound
	}
	is, err := decodeIssue([]byte(data))
	if err != nil {
		return Issue{}, err
	}
	if snap, ok := vals[1].(string); ok {
		is.Snapshot = json.RawMessage(snap) // (a record written before snapshots were kept apart has it inline)
	}
	return is, nil
}

func decodeIssue(data []byte) (Issue, error) {
	var is Issue
	if err := json.Unmarshal(data, &is); err != nil {
		return Issue{}, fmt.Errorf("decode issue record: %w", err)
	}
	return is, nil
}

// IssueByMessage returns the record mapped from a card message id or thread id, or ErrNotFound.
func (r *Redis) IssueByMessage(ctx context.Context, messageOrThreadID string) (Issue, error) {
	uuid, err := r.client.Get(ctx, r.keys.msg(messageOrThreadID)).Result()
	if errors.Is(err, redis.Nil) {
		return Issue{}, fmt.Errorf("issue by message %s: %w", messageOrThreadID, ErrNotFound)
	}
	if err != nil {
		return Issue{}, fmt.Errorf("issue by message %s: %w", messageOrThreadID, err)
	}
	is, err := r.getIssue(ctx, uuid)
	if err != nil {
		return Issue{}, fmt.Errorf("issue by message %s: issue %s: %w", messageOrThreadID, uuid, err)
	}
	return is, nil
}

// maxTxRetries bounds optimistic-transaction retries when another client changes the watched record.
const maxTxRetries = 20

// AddCard records a card of an issue, creating its record from base when it has none, in one optimistic
// transaction on the record.
func (r *Redis) AddCard(ctx context.Context, base Issue, c Card) (Issue, error) {
	if base.IssueUUID == "" {
		return Issue{}, errors.New("add card: empty issue uuid")
	}
	fresh := base
	fresh.Cards = nil
	var out Issue
	err := r.txIssue(ctx, base.IssueUUID, &fresh, func(is *Issue) (func(redis.Pipeliner), error) {
		setCard(is, c)
		data, snap, err := encodeRecord(*is)
		if err != nil {
			return nil, err
		}
		out = *is
		return func(p redis.Pipeliner) { r.queuePutIssue(ctx, p, *is, data, snap) }, nil
	})
	if err != nil {
		return Issue{}, fmt.Errorf("add card of issue %s in chat %s: %w", base.IssueUUID, c.ChatID, err)
	}
	return out, nil
}

// txIssue runs one optimistic transaction on an issue record: it reads the record (when there is none, a
// copy of missing, or ErrNotFound when missing is nil), lets edit change the copy and say what to write, and writes that in MULTI/EXEC while the record is
// watched. When another client changes the record in between, it starts again from the read, after a short
// random wait, up to maxTxRetries tries; so edit may run more than once, each time on a fresh copy. An error
// of edit's is final.
func (r *Redis) txIssue(ctx context.Context, issueUUID string, missing *Issue, edit func(is *Issue) (write func(redis.Pipeliner), err error)) error {
	recKey, snapKey := r.keys.issue(issueUUID), r.keys.snapshot(issueUUID)
	var editErr error
	txf := func(tx *redis.Tx) error {
		is, err := r.readIssue(ctx, tx, issueUUID)
		switch {
		case errors.Is(err, ErrNotFound) && missing != nil:
			is = *missing
			is.Cards = slices.Clone(missing.Cards)
		case err != nil:
			return err
		}
		write, err := edit(&is)
		if err != nil {
			editErr = err
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			write(p)
			return nil
		})
		return err
	}
	for attempt := range maxTxRetries {
		if attempt > 0 {
			if err := txBackoff(ctx, attempt); err != nil {
				return err
			}
		}
		err := r.client.Watch(ctx, txf, recKey, snapKey)
		if editErr == nil && errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return err
	}
	return fmt.Errorf("record kept changing (%d tries)", maxTxRetries)
}

// maxTxBackoff caps the wait between two tries of an optimistic transaction on an issue record (txIssue).
const maxTxBackoff = 50 * time.Millisecond

// txBackoff waits a random time of up to 1ms·2^attempt (at most maxTxBackoff) before another try of an
// optimistic transaction, so that writers that keep colliding on one record spread out instead of colliding
// again until maxTxRetries runs out. It returns early with ctx's error.
func txBackoff(ctx context.Context, attempt int) error {
	d := min(time.Millisecond<<min(attempt, 16), maxTxBackoff)
	t := time.NewTimer(rand.N(d) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// UpdateIssue reads the record, applies fn and writes the result with PutIssue's side effects in a
// WATCH/MULTI transaction on the record (see txIssue: fn may run more than once, each time on a fresh copy).
func (r *Redis) UpdateIssue(ctx context.Context, issueUUID string, fn func(*Issue) error) (Issue, error) {
	var out Issue
	err := r.txIssue(ctx, issueUUID, nil, func(is *Issue) (func(redis.Pipeliner), error) {
		if err := applyUpdate(is, fn); err != nil {
			return nil, err
		}
		data, snap, err := encodeRecord(*is)
		if err != nil {
			return nil, err
		}
		out = *is
		return func(p redis.Pipeliner) { r.queuePutIssue(ctx, p, *is, data, snap) }, nil
	})
	if err != nil {
		return Issue{}, fmt.Errorf("update issue %s: %w", issueUUID, err)
	}
	return out, nil
}

// listChunk bounds the number of keys in one MGET.
const listChunk = 256

// ListIssues returns every record, sorted by IssueUUID.
func (r *Redis) ListIssues(ctx context.Context) ([]Issue, error) {
	uuids, err := r.client.SMembers(ctx, r.keys.issues()).Result()
	if err != nil {
		return nil, fmt.Errorf("list issues: %w", err)
	}
	slices.Sort(uuids)
	out := make([]Issue, 0, len(uuids))
	for chunk := range slices.Chunk(uuids, listChunk) {
		ks := make([]string, len(chunk))
		for i, u := range chunk {
			ks[i] = r.keys.issue(u)
		}
		vals, err := r.client.MGet(ctx, ks...).Result()
		if err != nil {
			return nil, fmt.Errorf("list issues: %w", err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // deleted since SMEMBERS
			}
			is, err := decodeIssue([]byte(s))
			if err != nil {
				return nil, fmt.Errorf("list issues: issue %s: %w", chunk[i], err)
			}
			is.Snapshot = nil
			out = append(out, is)
		}
	}
	return out, nil
}

// DeleteIssue deletes the record and lets the issue's seen replies expire after Retention.
func (r *Redis) DeleteIssue(ctx context.Context, issueUUID string) error {
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.keys.issue(issueUUID), r.keys.snapshot(issueUUID))
		p.SRem(ctx, r.keys.issues(), issueUUID)
		p.HDel(ctx, r.keys.summaries(), issueUUID)
		p.Expire(ctx, r.keys.replies(issueUUID), Retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete issue %s: %w", issueUUID, err)
	}
	return nil
}

// ListSummaries returns the summary of every record, sorted by IssueUUID (one HGETALL). The first call on a
// keyspace written before summaries were kept writes the missing ones from the records.
func (r *Redis) ListSummaries(ctx context.Context) ([]Summary, error) {
	if err := r.summarizeAll(ctx); err != nil {
		return nil, fmt.Errorf("list summaries: %w", err)
	}
	all, err := r.client.HGetAll(ctx, r.keys.summaries()).Result()
	if err != nil {
		return nil, fmt.Errorf("list summaries: %w", err)
	}
	var out []Summary
	for uuid, v := range all {
		s, err := decodeSummary(uuid, []byte(v))
		if err != nil {
			return nil, fmt.Errorf("list summaries: %w", err)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Summary) int { return strings.Compare(a.IssueUUID, b.IssueUUID) })
	return out, nil
}

// GetSummary returns the summary of one record, or ErrNotFound.
func (r *Redis) GetSummary(ctx context.Context, issueUUID string) (Summary, error) {
	if err := r.summarizeAll(ctx); err != nil {
		return Summary{}, fmt.Errorf("get the summary of issue %s: %w", issueUUID, err)
	}
	v, err := r.client.HGet(ctx, r.keys.summaries(), issueUUID).Bytes()
	if errors.Is(err, redis.Nil) {
		return Summary{}, fmt.Errorf("get the summary of issue %s: %w", issueUUID, ErrNotFound)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("get the summary of issue %s: %w", issueUUID, err)
	}
	return decodeSummary(issueUUID, v)
}

// summarizeAll writes the summary of every record that has none, unless the marker says it was done.
func (r *Redis) summarizeAll(ctx context.Context) error {
	if r.summarized.Load() {
		return nil
	}
	n, err := r.client.Exists(ctx, r.keys.summariesBuilt()).Result()
	if err != nil {
		return err
	}
	if n == 1 {
		r.summarized.Store(true)
		return nil
	}
	recs, err := r.ListIssues(ctx)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(recs, listChunk) {
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, is := range chunk {
				summarizeScript.Eval(ctx, p, []string{r.keys.issue(is.IssueUUID), r.keys.summaries()},
					is.IssueUUID, encodeSummary(is.Summary()))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("summarize the records: %w", err)
		}
	}
	if err := r.client.Set(ctx, r.keys.summariesBuilt(), "1", 0).Err(); err != nil {
		return err
	}
	r.summarized.Store(true)
	return nil
}

// summarizeScript writes a record's summary if the record still exists and its summary is missing (a
// record written meanwhile wrote its own).
var summarizeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
end
return 0`)

func zMembers(score float64, members []string) []redis.Z {
	zs := make([]redis.Z, len(members))
	for i, m := range members {
		zs[i] = redis.Z{Score: score, Member: m}
	}
	return zs
}

// MarkIssuesSeen adds uuids to the seen set and prunes entries older than Retention.
func (r *Redis) MarkIssuesSeen(ctx context.Context, uuids ...string) error {
	if len(uuids) == 0 {
		return nil
	}
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, r.keys.seenIssues(), zMembers(unixMilli(r.now()), uuids)...)
		p.ZRemRangeByScore(ctx, r.keys.seenIssues(), "-inf", "("+r.seenCutoff())
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark %d issues seen: %w", len(uuids), err)
	}
	return nil
}

// zHas reports whether member is in the zset at key.
func (r *Redis) zHas(ctx context.Context, key, member string) (bool, error) {
	err := r.client.ZScore(ctx, key, member).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return err == nil, err
}

// IssueSeen reports whether uuid was marked seen.
func (r *Redis) IssueSeen(ctx context.Context, uuid string) (bool, error) {
	ok, err := r.zHas(ctx, r.keys.seenIssues(), uuid)
	if err != nil {
		return false, fmt.Errorf("check issue %s seen: %w", uuid, err)
	}
	return ok, nil
}

// markRepliesScript marks replies seen on an issue and, for a reply of the bot's own, records it in the
// own-replies set. While the issue has no record the replies set expires Retention after the last mark, as
// after DeleteIssue, so that replies of issues that were never (or are no longer) carded do not stay forever;
// PutIssue removes the TTL again. Checking the record and setting the TTL in one script keeps a concurrent
// PutIssue from being undone.
//
//	KEYS[1] -> <prefix>replies:<issueUUID>
//	KEYS[2] -> <prefix>issue:<issueUUID>
//	KEYS[3] -> <prefix>own
//	ARGV[1] -> score (unix ms)
//	ARGV[2] -> Retention in milliseconds
//	ARGV[3] -> "" for replies of others, else the own-replies pruning cutoff (unix ms)
//	ARGV[4..] -> reply uuids
var markRepliesScript = redis.NewScript(`
local own = ARGV[3] ~= ''
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  if own then
    redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i])
  end
end
if own then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// markReplies runs markRepliesScript; ownCutoff is "" unless the replies are the bot's own.
func (r *Redis) markReplies(ctx context.Context, issueUUID, ownCutoff string, replyUUIDs []string) error {
	args := make([]any, 0, 3+len(replyUUIDs))
	args = append(args, strconv.FormatInt(r.now().UnixMilli(), 10), Retention.Milliseconds(), ownCutoff)
	for _, u := range replyUUIDs {
		args = append(args, u)
	}
	ks := []string{r.keys.replies(issueUUID), r.keys.issue(issueUUID), r.keys.ownReplies()}
	return markRepliesScript.Run(ctx, r.client, ks, args...).Err()
}

// MarkRepliesSeen adds reply uuids to the issue's seen replies.
func (r *Redis) MarkRepliesSeen(ctx context.Context, issueUUID string, replyUUIDs ...string) error {
	if len(replyUUIDs) == 0 {
		return nil
	}
	if err := r.markReplies(ctx, issueUUID, "", replyUUIDs); err != nil {
		return fmt.Errorf("mark %d replies of issue %s seen: %w", len(replyUUIDs), issueUUID, err)
	}
	return nil
}

// ReplySeen reports whether replyUUID was marked seen on the issue.
func (r *Redis) ReplySeen(ctx context.Context, issueUUID, replyUUID string) (bool, error) {
	ok, err := r.zHas(ctx, r.keys.replies(issueUUID), replyUUID)
	if err != nil {
		return false, fmt.Errorf("check reply %s of issue %s seen: %w", replyUUID, issueUUID, err)
	}
	return ok, nil
}

// AddOwnReply records a reply of the bot's own and marks it seen on the issue.
func (r *Redis) AddOwnReply(ctx context.Context, issueUUID, replyUUID string) error {
	if err := r.markReplies(ctx, issueUUID, r.seenCutoff(), []string{replyUUID}); err != nil {
		return fmt.Errorf("add own reply %s of issue %s: %w", replyUUID, issueUUID, err)
	}
	return nil
}

// IsOwnReply reports whether the bot created replyUUID.
func (r *Redis) IsOwnReply(ctx context.Context, replyUUID string) (bool, error) {
	ok, err := r.zHas(ctx, r.keys.ownReplies(), replyUUID)
	if err != nil {
		return false, fmt.Errorf("check own reply %s: %w", replyUUID, err)
	}
	return ok, nil
}

// Claim sets the claim key with SET NX PX, so that exactly one caller among replicas wins.
func (r *Redis) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("claim %s: ttl %v is below 1ms", key, ttl)
	}
	ok, err := r.client.SetNX(ctx, r.keys.claim(key), "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	return ok, nil
}

// Claimed reports whether the claim key exists (Redis expires it with its ttl).
func (r *Redis) Claimed(ctx context.Context, key string) (bool, error) {
	n, err := r.client.Exists(ctx, r.keys.claim(key)).Result()
	if err != nil {
		return false, fmt.Errorf("check claim %s: %w", key, err)
	}
	return n == 1, nil
}

// Release deletes the claim key.
func (r *Redis) Release(ctx context.Context, key string) error {
	if err := r.client.Del(ctx, r.keys.claim(key)).Err(); err != nil {
		return fmt.Errorf("release claim %s: %w", key, err)
	}
	return nil
}

// PutRoute inserts or replaces a route.
func (r *Redis) PutRoute(ctx context.Context, rt Route) error {
	if err := checkRoute(rt.ChatID, rt.ChannelUUID); err != nil {
		return fmt.Errorf("put route: %w", err)
	}
	data, err := json.Marshal(rt)
	if err != nil {
		return fmt.Errorf("put route %s/%s: encode: %w", rt.ChatID, rt.ChannelUUID, err)
	}
	if err := r.client.HSet(ctx, r.keys.routes(), routeField(rt.ChatID, rt.ChannelUUID), data).Err(); err != nil {
		return fmt.Errorf("put route %s/%s: %w", rt.ChatID, rt.ChannelUUID, err)
	}
	return nil
}

// DeleteRoute deletes a route, or returns ErrNotFound.
func (r *Redis) DeleteRoute(ctx context.Context, chatID, channelUUID string) error {
	n, err := r.client.HDel(ctx, r.keys.routes(), routeField(chatID, channelUUID)).Result()
	if err != nil {
		return fmt.Errorf("delete route %s/%s: %w", chatID, channelUUID, err)
	}
	if n == 0 {
		return fmt.Errorf("delete route %s/%s: %w", chatID, channelUUID, ErrNotFound)
	}
	return nil
}

// Routes returns every route, sorted by ChatID then ChannelUUID.
func (r *Redis) Routes(ctx context.Context) ([]Route, error) {
	m, err := r.client.HGetAll(ctx, r.keys.routes()).Result()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]Route, 0, len(m))
	for field, v := range m {
		var rt Route
		if err := json.Unmarshal([]byte(v), &rt); err != nil {
			return nil, fmt.Errorf("list routes: decode %q: %w", field, err)
		}
		out = append(out, rt)
	}
	sortRoutes(out)
	return out, nil
}

// Meta returns the named value, or "" when it is unset.
func (r *Redis) Meta(ctx context.Context, name string) (string, error) {
	v, err := r.client.Get(ctx, r.keys.meta(name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get meta %s: %w", name, err)
	}
	return v, nil
}

// SetMeta sets the named value.
func (r *Redis) SetMeta(ctx context.Context, name, value string) error {
	if err := r.client.Set(ctx, r.keys.meta(name), value, 0).Err(); err != nil {
		return fmt.Errorf("set meta %s: %w", name, err)
	}
	return nil
}

// SetMetaFenced sets the named value unless the lease moved on from term.
func (r *Redis) SetMetaFenced(ctx context.Context, lease string, term int64, name, value string) (bool, error) {
	if term < 1 {
		return false, fmt.Errorf("set meta %s: term %d is below 1", name, term)
	}
	n, err := setMetaFencedScript.Run(ctx, r.client, []string{r.keys.term(lease), r.keys.meta(name)}, term, value).Int()
	if err != nil {
		return false, fmt.Errorf("set meta %s for term %d: %w", name, term, err)
	}
	return n == 1, nil
}

// setMetaFencedScript sets a meta value unless the lease's term is newer than the caller's.
//
//	KEYS[1] -> <prefix>term:<lease>
//	KEYS[2] -> <prefix>meta:<name>
//	ARGV[1] -> term
//	ARGV[2] -> value
var setMetaFencedScript = redis.NewScript(`
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// Cursor returns the named cursor, or 0 when it is unset.
func (r *Redis) Cursor(ctx context.Context, name string) (int64, error) {
	v, err := r.client.Get(ctx, r.keys.cursor(name)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get cursor %s: %w", name, err)
	}
	return v, nil
}

// advanceCursorScript raises a cursor, never lowers it.
//
//	KEYS[1] -> <prefix>cursor:<name>
//	ARGV[1] -> candidate value (decimal integer)
//
// It returns the cursor's value after the call, as a decimal string (an unset cursor counts as 0 and is only
// written when the candidate is greater). Strings avoid Lua's number-to-integer reply conversion.
var advanceCursorScript = redis.NewScript(`
local raw = redis.call('GET', KEYS[1])
local cur = tonumber(raw or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return raw or '0'
`)

// AdvanceCursor atomically sets the cursor to max(current, v) and returns the new value.
func (r *Redis) AdvanceCursor(ctx context.Context, name string, v int64) (int64, error) {
	s, err := advanceCursorScript.Run(ctx, r.client, []string{r.keys.cursor(name)}, strconv.FormatInt(v, 10)).Text()
	if err != nil {
		return 0, fmt.Errorf("advance cursor %s to %d: %w", name, v, err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("advance cursor %s to %d: parse stored value: %w", name, v, err)
	}
	return n, nil
}

// acquireLeaseScript takes or renews a lease and returns its term.
//
//	KEYS[1] -> <prefix>lease:<name>   hash {instance, incarnation, term}, PX ttl
//	KEYS[2] -> <prefix>term:<name>    the last term handed out (never expires)
//	ARGV[1] -> instance
//	ARGV[2] -> incarnation
//	ARGV[3] -> ttl in milliseconds
//
// Renews and returns the term if (ARGV[1], ARGV[2]) holds the lease. Takes it with a new term (INCR KEYS[2])
// if it is free (absent, i.e. expired) or held by an older incarnation (a smaller string) of the same
// instance. Returns 0 otherwise. A string left by an older version of the bot is replaced.
var acquireLeaseScript = redis.NewScript(`
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  redis.call('DEL', KEYS[1])
end
local cur = redis.call('HMGET', KEYS[1], 'instance', 'incarnation', 'term')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return tonumber(cur[3])
end
if cur[1] and (cur[1] ~= ARGV[1] or ARGV[2] <= cur[2]) then
  return 0
end
local term = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'incarnation', ARGV[2], 'term', term)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return term
`)

// releaseLeaseScript frees a lease only for its holder.
//
//	KEYS[1] -> <prefix>lease:<name>
//	ARGV[1] -> instance
//	ARGV[2] -> incarnation
//
// Returns 1 if the lease was held by (ARGV[1], ARGV[2]) and is now deleted, else 0.
var releaseLeaseScript = redis.NewScript(`
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return 0
end
local cur = redis.call('HMGET', KEYS[1], 'instance', 'incarnation')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// AcquireLease takes the named lease for h, or renews it if h holds it, and returns its term (0: another
// instance holds it).
func (r *Redis) AcquireLease(ctx context.Context, name string, h Holder, ttl time.Duration) (int64, error) {
	if err := checkHolder(h); err != nil {
		return 0, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("acquire lease %s: ttl %v is below 1ms", name, ttl)
	}
	term, err := acquireLeaseScript.Run(ctx, r.client, []string{r.keys.lease(name), r.keys.term(name)},
		h.Instance, h.Incarnation, ttl.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("acquire lease %s for %s: %w", name, h, err)
	}
	return term, nil
}

// ReleaseLease frees the lease if h holds it.
func (r *Redis) ReleaseLease(ctx context.Context, name string, h Holder) error {
	if err := releaseLeaseScript.Run(ctx, r.client, []string{r.keys.lease(name)}, h.Instance, h.Incarnation).Err(); err != nil {
		return fmt.Errorf("release lease %s for %s: %w", name, h, err)
	}
	return nil
}

// claimWorkScript claims work for a lease term.
//
//	KEYS[1] -> <prefix>work:<key>   the claiming term, PX ttl
//	KEYS[2] -> <prefix>term:<lease> the lease's current term
//	ARGV[1] -> term
//	ARGV[2] -> ttl in milliseconds
//
// Returns 0 if the lease has a newer term than ARGV[1] (the caller was deposed) or a claim of ARGV[1] or a
// newer term holds; otherwise sets the claim and returns 1.
var claimWorkScript = redis.NewScript(`
local current = tonumber(redis.call('GET', KEYS[2]))
if current and current > tonumber(ARGV[1]) then
  return 0
end
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur and cur >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// releaseWorkScript frees a work claim of one term.
//
//	KEYS[1] -> <prefix>work:<key>
//	ARGV[1] -> term
var releaseWorkScript = redis.NewScript(`
if tonumber(redis.call('GET', KEYS[1])) == tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// ClaimWork claims key for term of lease unless the lease moved on or a claim of term or a newer term holds.
func (r *Redis) ClaimWork(ctx context.Context, lease, key string, term int64, ttl time.Duration) (bool, error) {
	if term < 1 {
		return false, fmt.Errorf("claim work %s: term %d is below 1", key, term)
	}
	if ttl < time.Millisecond {
		return false, fmt.Errorf("claim work %s: ttl %v is below 1ms", key, ttl)
	}
	n, err := claimWorkScript.Run(ctx, r.client, []string{r.keys.work(key), r.keys.term(lease)}, term, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("claim work %s for term %d: %w", key, term, err)
	}
	return n == 1, nil
}

// ReleaseWork frees key if term claimed it.
func (r *Redis) ReleaseWork(ctx context.Context, key string, term int64) error {
	if err := releaseWorkScript.Run(ctx, r.client, []string{r.keys.work(key)}, term).Err(); err != nil {
		return fmt.Errorf("release work %s of term %d: %w", key, term, err)
	}
	return nil
}

// PutJob stores the job and (re)schedules it in one transaction.
func (r *Redis) PutJob(ctx context.Context, queue string, j Job) error {
	if j.ID == "" {
		return fmt.Errorf("put job in %s: empty job id", queue)
	}
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("put job %s in %s: encode: %w", j.ID, queue, err)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, r.keys.jobs(queue), j.ID, data)
		p.ZAdd(ctx, r.keys.due(queue), redis.Z{Score: float64(j.NotBefore.UnixMicro()), Member: j.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("put job %s in %s: %w", j.ID, queue, err)
	}
	return nil
}

// DueJobs returns up to limit due jobs, oldest NotBefore first.
func (r *Redis) DueJobs(ctx context.Context, queue string, now time.Time, limit int) ([]Job, error) {
	ids, err := r.client.ZRangeByScore(ctx, r.keys.due(queue), &redis.ZRangeBy{
		Min:   "-inf",
		Max:   strconv.FormatInt(now.UnixMicro(), 10),
		Count: int64(max(limit, 0)),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("list due jobs in %s: %w", queue, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := r.client.HMGet(ctx, r.keys.jobs(queue), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("list due jobs in %s: %w", queue, err)
	}
	out := make([]Job, 0, len(vals))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // deleted between the two reads
		}
		var j Job
		if err := json.Unmarshal([]byte(s), &j); err != nil {
			return nil, fmt.Errorf("list due jobs in %s: decode job %s: %w", queue, ids[i], err)
		}
		out = append(out, j)
	}
	return out, nil
}

// deleteJobIfScript removes a job whose rev is still the given one.
//
//	KEYS[1] -> <prefix>job:<queue>
//	KEYS[2] -> <prefix>due:<queue>
//	ARGV[1] -> job id
//	ARGV[2] -> rev, as a decimal string
//
// Returns 1 if the job was removed, 0 if it is missing or was replaced (another rev).
var deleteJobIfScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return 0
end
local rev = string.match(v, '"rev":(%d+)') or '0'
if rev ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// DeleteJobIf removes a job whose Rev is still rev, in one Lua script.
func (r *Redis) DeleteJobIf(ctx context.Context, queue, id string, rev uint64) (bool, error) {
	n, err := deleteJobIfScript.Run(ctx, r.client, []string{r.keys.jobs(queue), r.keys.due(queue)},
		id, strconv.FormatUint(rev, 10)).Int()
	if err != nil {
		return false, fmt.Errorf("delete job %s from %s: %w", id, queue, err)
	}
	return n == 1, nil
}

// DeleteJob removes a job from the queue.
func (r *Redis) DeleteJob(ctx context.Context, queue, id string) error {
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, r.keys.jobs(queue), id)
		p.ZRem(ctx, r.keys.due(queue), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete job %s from %s: %w", id, queue, err)
	}
	return nil
}

// CountJobs returns the number of jobs in the queue.
func (r *Redis) CountJobs(ctx context.Context, queue string) (int, error) {
	n, err := r.client.HLen(ctx, r.keys.jobs(queue)).Result()
	if err != nil {
		return 0, fmt.Errorf("count jobs in %s: %w", queue, err)
	}
	return int(n), nil
}

// takeRateSlotScript takes a slot of a sliding-window rate limit. It reads the Redis server's clock, not the
// client's, so that replicas whose clocks disagree still share one window.
//
//	KEYS[1] -> <prefix>ratelimit:<name>
//	ARGV[1] -> limit
//	ARGV[2] -> window in microseconds
//	ARGV[3] -> window in milliseconds, rounded up (the key's PEXPIRE)
//	ARGV[4] -> random suffix that makes the new member unique among replicas
//
// It drops members whose score (server time in unix µs) is at least a window old. If fewer than ARGV[1]
// remain, it adds one member for now, sets the TTL and returns 0; otherwise it returns the microseconds until
// the oldest member is a window old (at least 1, at most the window, even if the server's clock went back).
var takeRateSlotScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  local score = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('ZADD', KEYS[1], score, score .. '-' .. ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then
  wait = 1
elseif wait > window then
  wait = window
end
return wait
`)

// ceilDiv returns d/unit rounded up.
func ceilDiv(d, unit time.Duration) int64 {
	return int64((d + unit - 1) / unit)
}

// TakeRateSlot takes a slot of the rate limit name, shared by every client of the same Redis and prefix, in
// one Lua script timed by the Redis server's clock. The window is kept to the microsecond.
func (r *Redis) TakeRateSlot(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error) {
	if err := checkRate(limit, window); err != nil {
		return 0, fmt.Errorf("take rate slot %s: %w", name, err)
	}
	us, err := takeRateSlotScript.Run(ctx, r.client, []string{r.keys.rateLimit(name)},
		limit, ceilDiv(window, time.Microsecond), ceilDiv(window, time.Millisecond),
		strconv.FormatUint(rand.Uint64(), 36)).Int64()
	if err != nil {
		return 0, fmt.Errorf("take rate slot %s (%d per %v): %w", name, limit, window, err)
	}
	// The script counts whole microseconds; a window that is not a whole number of them still caps the wait.
	return min(time.Duration(us)*time.Microsecond, window), nil
}
