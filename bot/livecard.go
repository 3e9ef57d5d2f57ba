package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/bot/plaintext"
	"issuebot/guance"
	"issuebot/store"
)

// queuePatches is the store queue of cards to re-render. A job's id is the issue uuid,
// so any number of changes to one issue make one job; the card is rendered from the
// issue record when the job runs (the latest state wins). Each card also has a job
// "expiry:<issue uuid>", due a day before Feishu stops taking its buttons.
const queuePatches = "patches"

// buttonWindow is how long Feishu takes a JSON 2.0 card's buttons (and patches) after
// it was sent.
const buttonWindow = 14 * 24 * time.Hour

// expiryLead is how long before buttonWindow ends the card says so.
const expiryLead = 24 * time.Hour

// patchEvery is the least time between two patches of one card: Feishu allows 5 per
// second per message, and a burst of changes is better shown as its end state.
const patchEvery = time.Second

// patchMaxAge is how old a card may be and still be patched. Feishu refuses patches
// to cards older than 14 days; an hour of margin covers clock differences.
const patchMaxAge = buttonWindow - time.Hour

// snapshotDescRunes bounds the description kept in an issue's snapshot: the card
// shows at most cards.DescRunes of it.
const snapshotDescRunes = 2 * cards.DescRunes

// snapshotData is what a record's snapshot holds: the part of the issue the card is
// rendered from, and its level's display, so that any replica re-renders the card
// without a Guance request.
type snapshotData struct {
	Issue      guance.Issue `json:"issue"`
	LevelName  string       `json:"level_name,omitempty"`
	LevelColor string       `json:"level_color,omitempty"`
}

// snapshot is the snapshot of is as this replica knows its level.
func (b *Bot) snapshot(is guance.Issue) json.RawMessage {
	is.Description = plaintext.Truncate(is.Description, snapshotDescRunes, "")
	is.Extend = guance.Extend{Text: plaintext.Truncate(is.Extend.Text, snapshotDescRunes, ""), SourceLink: is.Extend.SourceLink}
	d := snapshotData{Issue: is}
	if l, ok := b.levels.get(is.Level); ok {
		d.LevelName, d.LevelColor = l.Name, l.Color
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil
	}
	return raw
}

// recordIssue returns the issue a record describes: its snapshot, with the fields the
// record keeps itself (the latest known) laid over it, and the level display the
// snapshot carries. A snapshot that does not decode is reported (the fields the record
// keeps itself are still returned).
func recordIssue(rec store.Issue) (guance.Issue, snapshotData, error) {
	var d snapshotData
	var err error
	if len(rec.Snapshot) > 0 {
		if uerr := json.Unmarshal(rec.Snapshot, &d); uerr != nil {
			d, err = snapshotData{}, fmt.Errorf("decode the stored snapshot of issue %s: %w", rec.IssueUUID, uerr)
		}
	}
	is := d.Issue
	is.UUID = rec.IssueUUID
	is.Name = rec.Name
	is.StatusType = guance.StatusType(rec.StatusType)
	is.Level = guance.LevelRef(rec.Level)
	if rec.UpdateAt > 0 {
		is.UpdateAt = guance.Time(rec.UpdateAt)
	}
	if is.CreateAt.IsZero() && rec.CreateAt > 0 {
		is.CreateAt = guance.Time(rec.CreateAt)
	}
	if string(is.Level) != string(d.Issue.Level) {
		d.LevelName, d.LevelColor = "", "" // the level changed since the snapshot
	}
	return is, d, err
}

// recordCard renders the card of a record at its current revision. A record whose
// snapshot does not decode renders from the fields it keeps itself (no description),
// is logged, and is flagged to be read again from Guance, which stores a good one.
func (b *Bot) recordCard(ctx context.Context, rec store.Issue) ([]byte, error) {
	is, snap, err := recordIssue(rec)
	if err != nil {
		b.logger.Warn("stored issue snapshot is unreadable; reading the issue again", "issue_uuid", rec.IssueUUID, "err", err)
		if _, _, uerr := b.updateIssue(ctx, rec.IssueUUID, func(r *store.Issue) error {
			if r.Refresh {
				return errUnchanged
			}
			r.Refresh = true
			return nil
		}); uerr != nil {
			b.logger.Warn("flag an issue to be read again", "issue_uuid", rec.IssueUUID, "err", uerr)
		}
	}
	d := b.cardData(is, rec.CardRevision)
	if d.LevelName == "" {
		d.LevelName, d.LevelColor = snap.LevelName, snap.LevelColor
	}
	d.SyncedReplies = rec.SyncedReplies
	d.Deleted = rec.Gone
	if !rec.SentAt.IsZero() && b.now().Sub(rec.SentAt) >= patchMaxAge-expiryLead {
		d.ButtonsUntil = rec.SentAt.Add(buttonWindow)
	}
	if rec.ChangedBy != "" || rec.ChangedAction != "" {
		d.LastChange = &cards.Change{Who: rec.ChangedBy, Action: rec.ChangedAction, At: rec.ChangedAt}
	}
	return cards.Render(d)
}

// errUnchanged aborts an UpdateIssue that has nothing to write.
var errUnchanged = errors.New("unchanged")

// updateIssue runs store.UpdateIssue, treating errUnchanged as "nothing to do".
func (b *Bot) updateIssue(ctx context.Context, issueUUID string, fn func(*store.Issue) error) (store.Issue, bool, error) {
	rec, err := b.state.UpdateIssue(ctx, issueUUID, fn)
	if errors.Is(err, errUnchanged) {
		return store.Issue{}, false, nil
	}
	if err != nil {
		return store.Issue{}, false, fmt.Errorf("update issue %s: %w", issueUUID, err)
	}
	return rec, true, nil
}

// ownWriteMargin is how far apart the replicas' clocks may be when judging whether
// issue data was asked for before the bot's own status change was recorded.
const ownWriteMargin = 2 * time.Second

// observe applies an issue as Guance returned it (a list row, a get) to its record;
// asked is when the request was made. A change the card shows (status, level, title)
// raises the card's revision and queues a patch. Data older than the record's is
// ignored, so a list row read before a button click cannot undo the click. Guance's
// updateAt has whole seconds: data with the record's updateAt that differs from it,
// asked before the bot's own change in that second was recorded, may predate the
// change, so the issue is read again instead.
func (b *Bot) observe(ctx context.Context, is guance.Issue, asked time.Time) error {
	if is.Deleted() {
		return b.markGone(ctx, is.UUID)
	}
	var visible bool
	rec, ok, err := b.updateIssue(ctx, is.UUID, func(r *store.Issue) error {
		up := is.UpdateAt.Unix()
		if up < r.UpdateAt || (up == r.UpdateAt && !r.Refresh && sameCardFields(*r, is)) {
			return errUnchanged
		}
		visible = !sameCardFields(*r, is)
		if visible && up == r.UpdateAt && asked.Before(r.StatusSetAt.Add(ownWriteMargin)) {
			if r.Refresh {
				return errUnchanged
			}
			visible, r.Refresh = false, true
			return nil
		}
		if visible && r.StatusType != int(is.StatusType) && !b.byBotKey(is.Updator) {
			// Changed in Guance: the footer says by whom.
			r.ChangedBy, r.ChangedAt = guanceActor(is), is.UpdateAt.Time()
			r.ChangedAction = statusAction(guance.StatusType(r.StatusType), is.StatusType)
		}
		r.UpdateAt = max(r.UpdateAt, up)
		r.StatusType, r.Level, r.Name = int(is.StatusType), string(is.Level), is.Name
		if !is.CreateAt.IsZero() {
			r.CreateAt = is.CreateAt.Unix()
		}
		r.Snapshot = b.snapshot(is)
		r.Refresh = false
		if visible {
			r.CardRevision++
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil // not carded by this bot
	}
	if err != nil || !ok {
		return err
	}
	if visible {
		b.logger.Info("issue changed in Guance; card will be updated", "issue_uuid", is.UUID,
			"status", is.StatusType.String(), "revision", rec.CardRevision)
		return b.queuePatch(ctx, rec.IssueUUID)
	}
	return nil
}

// sameCardFields reports whether a record already shows what the card shows of is.
func sameCardFields(r store.Issue, is guance.Issue) bool {
	return r.StatusType == int(is.StatusType) && r.Level == string(is.Level) && r.Name == is.Name
}

// guanceActor names who last changed an issue in Guance, for the card's footer.
func guanceActor(is guance.Issue) string {
	if is.UpdatorInfo != nil && is.UpdatorInfo.Name != "" {
		return is.UpdatorInfo.Name + " (Guance)"
	}
	return "Guance"
}

// statusAction names a status change as the card's footer words it.
func statusAction(from, to guance.StatusType) string {
	switch to {
	case guance.StatusResolved, guance.StatusClosed:
		return cards.ActionResolve
	case guance.StatusPending:
		return cards.ActionPending
	case guance.StatusOpen:
		if from != guance.StatusOpen {
			return cards.ActionReopen
		}
	}
	return ""
}

// metaKeyAccount is the store's name for the Guance API key's account id.
const metaKeyAccount = "guance.keyAccount"

// learnKey remembers the account id Guance shows for the bot's API key, taken from
// something the bot wrote (a reply it created, an issue it modified), in memory and in
// the store, so a restart knows it at once.
func (b *Bot) learnKey(ctx context.Context, account string) {
	if !strings.HasPrefix(account, "wsak_") {
		return
	}
	if k := b.keyID.Load(); k != nil && *k == account {
		return
	}
	b.keyID.Store(&account)
	b.held.Wake() // held replies can be settled now
	b.logger.Info("learnt the Guance API key's account id", "key_account", account)
	if err := b.state.SetMeta(ctx, metaKeyAccount, account); err != nil {
		b.logger.Warn("keep the Guance API key's account id", "err", err)
	}
}

// loadKey reads the API key's account id learnt by an earlier run.
func (b *Bot) loadKey(ctx context.Context) {
	if k, err := b.state.Meta(ctx, metaKeyAccount); err == nil && k != "" {
		b.keyID.Store(&k)
	}
}

// byBotKey reports whether an account is the bot's API key. Until the bot has seen
// its key's id, every API key (wsak_…) counts as possibly its own: a reply of another
// integration is then held back rather than the bot's own echoed.
func (b *Bot) byBotKey(account string) bool {
	if !strings.HasPrefix(account, "wsak_") {
		return false
	}
	if k := b.keyID.Load(); k != nil {
		return account == *k
	}
	return true
}

// markGone records that Guance no longer has the issue: the card says so, and the
// issue is no longer watched.
func (b *Bot) markGone(ctx context.Context, issueUUID string) error {
	rec, ok, err := b.updateIssue(ctx, issueUUID, func(r *store.Issue) error {
		if r.Gone {
			return errUnchanged
		}
		r.Gone, r.Refresh = true, false
		r.ScanResume, r.ScanTop = 0, 0 // nothing more to read: its queued replies may go
		r.CardRevision++
		return nil
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && !ok) {
		return nil
	}
	if err != nil {
		return err
	}
	b.logger.Info("issue deleted in Guance; card marked", "issue_uuid", issueUUID)
	return b.queuePatch(ctx, rec.IssueUUID)
}

// queuePatch asks for an issue's card to be re-rendered, no sooner than patchEvery
// after its last patch.
func (b *Bot) queuePatch(ctx context.Context, issueUUID string) error {
	at := latest(b.now(), b.patchClock.last(issueUUID).Add(patchEvery))
	if err := b.patches.Enqueue(ctx, issueUUID, patchJob{}, at); err != nil {
		return fmt.Errorf("queue card patch for issue %s: %w", issueUUID, err)
	}
	return nil
}

// patchClock remembers when each card was last patched (this process's view; the
// leader does every patch).
type patchClock struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (c *patchClock) last(issueUUID string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at[issueUUID]
}

func (c *patchClock) mark(issueUUID string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at == nil {
		c.at = map[string]time.Time{}
	}
	c.at[issueUUID] = at
	if len(c.at) > 4096 {
		for k, t := range c.at {
			if at.Sub(t) > patchEvery {
				delete(c.at, k)
			}
		}
	}
}

// patchJob is a queued re-render of an issue's card; the job's id is the issue uuid, so
// changes coalesce into one job, and the card shows the record as it is when the job
// runs (the latest state wins). Expiry marks the job that adds the buttons' expiry
// note to a quiet card (its id is "expiry:" + the issue uuid).
type patchJob struct {
	IssueUUID string `json:"issue_uuid,omitempty"`
	Expiry    bool   `json:"expiry,omitempty"`
}

// queueExpiry schedules the expiry note of a card sent at sentAt.
func (b *Bot) queueExpiry(ctx context.Context, issueUUID string, sentAt time.Time) error {
	at := sentAt.Add(patchMaxAge - expiryLead)
	if err := b.patches.Enqueue(ctx, "expiry:"+issueUUID, patchJob{IssueUUID: issueUUID, Expiry: true}, at); err != nil {
		return fmt.Errorf("schedule the expiry note of issue %s: %w", issueUUID, err)
	}
	return nil
}

// requeuePatches queues a patch for every card that shows an older revision than its
// record (a patch cut short by a crash); the leader runs it when it starts.
func (b *Bot) requeuePatches(ctx context.Context) error {
	recs, err := b.state.ListIssues(ctx)
	if err != nil {
		return fmt.Errorf("list issues for pending patches: %w", err)
	}
	for _, r := range recs {
		if len(r.Snapshot) == 0 && !r.Gone && r.CardMessageID != "" && !r.Refresh {
			// Kept by an older version: read the issue again before any re-render.
			if _, _, err := b.updateIssue(ctx, r.IssueUUID, func(x *store.Issue) error {
				x.Refresh = true
				return nil
			}); err != nil {
				return err
			}
		}
		if r.CardMessageID != "" && r.CardRevision > r.PatchedRevision {
			if err := b.queuePatch(ctx, r.IssueUUID); err != nil {
				return err
			}
		}
		if r.CardMessageID != "" && !r.Gone && b.now().Sub(r.SentAt) < patchMaxAge-expiryLead {
			// Cards sent by a version that did not schedule the note (idempotent).
			if err := b.queueExpiry(ctx, r.IssueUUID, r.SentAt); err != nil {
				return err
			}
		}
	}
	return nil
}

// patchCard renders an issue's card from its record and patches it in place. A card
// patched less than patchEvery ago waits for its turn, so a burst of changes makes at
// most two patches a second; a card too old to patch gets a fresh card in its thread
// instead. The job stays until the patch is made: a failure (rendering included) is
// retried, and a change made while the patch is under way queues the job again, which
// the engine keeps.
func (b *Bot) patchCard(ctx context.Context, j *jobs.Job[patchJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	issue := cmp.Or(j.Payload.IssueUUID, j.ID)
	if wait := b.patchClock.last(issue).Add(patchEvery); b.now().Before(wait) {
		return jobs.Later(wait.Sub(b.now()), errors.New("patched less than a second ago"))
	}
	rec, err := b.state.GetIssue(wctx, issue)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read issue record: %w", err)
	}
	if j.Payload.Expiry {
		if rec.Gone || rec.CardMessageID == "" || b.now().Sub(rec.SentAt) < patchMaxAge-expiryLead {
			return nil // gone, or a fresh card since, which has its own note scheduled
		}
		// The note is a change of the card: a revision of its own.
		if rec, _, err = b.updateIssue(wctx, issue, func(r *store.Issue) error {
			r.CardRevision++
			return nil
		}); err != nil {
			return err
		}
	}
	if rec.PatchedRevision >= rec.CardRevision {
		return nil // already shown (a click's answer, say)
	}
	if len(rec.Snapshot) == 0 && !rec.Gone {
		// A record of an older version: rendering it now would blank the card's body.
		// The watcher reads the issue first (requeuePatches flagged it).
		return jobs.Later(b.cfg.BudgetWindow/6, errors.New("waiting for the issue to be read again"))
	}
	if b.now().Sub(rec.SentAt) > patchMaxAge {
		return b.recard(wctx, rec)
	}
	card, err := b.recordCard(wctx, rec)
	if err != nil {
		return fmt.Errorf("render card of issue %s: %w", rec.IssueUUID, err)
	}
	b.patchClock.mark(rec.IssueUUID, b.now())
	err = b.feishu.PatchCard(wctx, rec.CardMessageID, card)
	var fe *feishu.Error
	if errors.As(err, &fe) && fe.PatchWindowEnded() {
		return b.recard(wctx, rec)
	}
	if errors.As(err, &fe) && fe.MessageGone() {
		// Someone recalled the card: it stays gone (Guance replies go to the chat). The
		// revision counts as done, so it is not tried again, not even after a restart.
		b.logger.Warn("the issue's card was recalled; it is no longer updated", "issue_uuid", rec.IssueUUID,
			"message_id", rec.CardMessageID, "revision", rec.CardRevision)
		return b.patched(wctx, rec.IssueUUID, rec.CardMessageID, rec.CardRevision)
	}
	if err != nil {
		return fmt.Errorf("patch card %s: %w", rec.CardMessageID, err)
	}
	b.metrics.cardPatches.Inc()
	return b.patched(wctx, rec.IssueUUID, rec.CardMessageID, rec.CardRevision)
}

// patched records that the card message shows revision rev, and queues another patch
// if the record moved on meanwhile. A later revision recorded as shown (a click's
// answer while this patch was under way) is lowered to rev: which of the two Feishu
// applied last is unknown, so the card is patched once more with the latest.
func (b *Bot) patched(ctx context.Context, issueUUID, messageID string, rev int64) error {
	rec, _, err := b.updateIssue(ctx, issueUUID, func(r *store.Issue) error {
		if r.CardMessageID != messageID || r.PatchedRevision == rev {
			return errUnchanged
		}
		r.PatchedRevision = rev
		return nil
	})
	if err != nil {
		return err
	}
	if rec.IssueUUID != "" && rec.CardRevision > rev {
		return b.queuePatch(ctx, issueUUID)
	}
	if rec.IssueUUID == "" { // unchanged: look at the record as it is
		if cur, err := b.state.GetIssue(ctx, issueUUID); err == nil && cur.CardMessageID == messageID && cur.CardRevision > rev {
			return b.queuePatch(ctx, issueUUID)
		}
	}
	return nil
}

// recard posts a fresh card into the thread of a card too old to patch, and moves the
// issue to it: its buttons work again and later changes patch it.
func (b *Bot) recard(ctx context.Context, rec store.Issue) error {
	rec.CardRevision++
	card, err := b.recordCard(ctx, rec)
	if err != nil {
		return fmt.Errorf("render card of issue %s: %w", rec.IssueUUID, err)
	}
	sum := sha256.Sum256([]byte(rec.IssueUUID + "\x00" + rec.CardMessageID))
	uuid := "ibn-" + hex.EncodeToString(sum[:])[:40]
	if !b.pacer.wait(ctx, rec.ChatID) {
		return errAbandoned
	}
	sent, err := b.feishu.ReplyCard(ctx, rec.CardMessageID, card, true, uuid)
	if fe := (*feishu.Error)(nil); errors.As(err, &fe) && fe.MessageGone() {
		// The old card was recalled: as with a patch, the issue's card is given up.
		b.logger.Warn("the issue's card was recalled; it is no longer updated", "issue_uuid", rec.IssueUUID,
			"message_id", rec.CardMessageID, "revision", rec.CardRevision-1)
		return b.patched(ctx, rec.IssueUUID, rec.CardMessageID, rec.CardRevision-1)
	}
	if err != nil {
		return fmt.Errorf("post a fresh card for issue %s: %w", rec.IssueUUID, err)
	}
	old := rec.CardMessageID
	_, _, err = b.updateIssue(ctx, rec.IssueUUID, func(r *store.Issue) error {
		if r.CardMessageID != old {
			return errUnchanged // moved already
		}
		r.CardMessageID, r.SentAt = sent.MessageID, b.now()
		if r.ThreadID == "" {
			r.ThreadID = sent.ThreadID
		}
		if r.CardRevision >= rec.CardRevision {
			r.CardRevision++ // changed while the fresh card was being posted: patch it
		} else {
			r.CardRevision = rec.CardRevision
		}
		r.PatchedRevision = rec.CardRevision
		return nil
	})
	if err != nil {
		// The new card is out; the retry posts with the same uuid and gets it back.
		return fmt.Errorf("record the fresh card %s: %w", sent.MessageID, err)
	}
	b.metrics.cardsSent.Inc()
	b.logger.Info("card older than 14 days: posted a fresh one in its thread", "issue_uuid", rec.IssueUUID,
		"old_message_id", old, "message_id", sent.MessageID)
	if err := b.queueExpiry(ctx, rec.IssueUUID, b.now()); err != nil {
		b.logger.Warn("schedule the buttons' expiry note", "issue_uuid", rec.IssueUUID, "err", err)
	}
	return b.patched(ctx, rec.IssueUUID, sent.MessageID, rec.CardRevision)
}

// latest returns the latest of the times given (the zero time for none).
func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}
