package store

// keys builds every Redis key under one prefix. No other code spells a key; the package comment lists them.
type keys struct {
	prefix string
}

// issue is the JSON record of one issue.
func (k keys) issue(issueUUID string) string { return k.prefix + "issue:" + issueUUID }

// issues is the set of issue uuids that have a record.
func (k keys) issues() string { return k.prefix + "issues" }

// summaries is the hash of the records' summaries by issue uuid, and summariesBuilt its marker.
func (k keys) summaries() string      { return k.prefix + "summaries" }
func (k keys) summariesBuilt() string { return k.prefix + "summaries:built" }

// snapshot is the key of an issue record's Snapshot, kept apart from the record.
func (k keys) snapshot(issueUUID string) string { return k.prefix + "snap:" + issueUUID }

// msg maps a card message id or thread id to an issue uuid.
func (k keys) msg(id string) string { return k.prefix + "msg:" + id }

// seenIssues is the zset of issue uuids known to the poller.
func (k keys) seenIssues() string { return k.prefix + "seen:issues" }

// replies is the zset of reply uuids seen on one issue.
func (k keys) replies(issueUUID string) string { return k.prefix + "replies:" + issueUUID }

// ownReplies is the zset of reply uuids the bot created.
func (k keys) ownReplies() string { return k.prefix + "own" }

// claim is one deduplication claim.
func (k keys) claim(key string) string { return k.prefix + "claim:" + key }

// routes is the hash of all routes.
func (k keys) routes() string { return k.prefix + "routes" }

// meta is one named value.
func (k keys) meta(name string) string { return k.prefix + "meta:" + name }

// cursor is one named cursor.
func (k keys) cursor(name string) string { return k.prefix + "cursor:" + name }

// lease is one named lease.
func (k keys) lease(name string) string { return k.prefix + "lease:" + name }

// term is the last term handed out for one named lease.
func (k keys) term(name string) string { return k.prefix + "term:" + name }

// work is one work claim, fenced by a lease term.
func (k keys) work(key string) string { return k.prefix + "work:" + key }

// jobs is the hash of one queue's jobs by id.
func (k keys) jobs(queue string) string { return k.prefix + "job:" + queue }

// due is the zset of one queue's job ids by NotBefore.
func (k keys) due(queue string) string { return k.prefix + "due:" + queue }

// rateLimit is the zset of the slots taken in one named rate window.
func (k keys) rateLimit(name string) string { return k.prefix + "ratelimit:" + name }
