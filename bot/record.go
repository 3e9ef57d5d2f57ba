package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/plaintext"
	"issuebot/guance"
	"issuebot/store"
)

// The issue record: what the bot knows of a carded issue, kept in the store. This file
// turns what Guance shows of an issue (a list row, a get) into record changes, and a
// record into the card's data (through the snapshot of the issue kept in the record).

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
	if strings.TrimSpace(is.Extend.Text) != "" {
		is.Description = "" // the card shows extend.text when there is one
	}
	is.Extend = guance.Extend{Text: plaintext.Truncate(is.Extend.Text, snapshotDescRunes, ""), SourceLink: is.Extend.SourceLink,
		Channels: is.Extend.Channels}
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

// recordCard renders a record's card c (one chat's) at the record's current revision.
// A record whose snapshot does not decode renders from the fields it keeps itself (no
// description), is logged, and is flagged to be read again from Guance, which stores
// a good one.
func (b *Bot) recordCard(ctx context.Context, rec store.Issue, c store.Card) ([]byte, error) {
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
	if !c.SentAt.IsZero() && b.now().Sub(c.SentAt) >= patchMaxAge-expiryLead {
		d.ButtonsUntil = c.SentAt.Add(buttonWindow)
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
	// Most listed issues did not change: their summary says so without reading (or
	// locking) the record.
	sum, err := b.state.GetSummary(ctx, is.UUID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil // not carded by this bot
	case err == nil && listedUnchanged(sum, is):
		return nil
	}
	var visible bool
	up := is.UpdateAt.Unix()
	rec, ok, err := b.updateIssue(ctx, is.UUID, func(r *store.Issue) error {
		s := r.Summary()
		if listedUnchanged(s, is) {
			return errUnchanged
		}
		visible = !sameCardFields(s, is)
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

// listedUnchanged reports whether the record summarized by s already has what is
// shows: an older updateAt, or the same one and the same card fields.
func listedUnchanged(s store.Summary, is guance.Issue) bool {
	up := is.UpdateAt.Unix()
	return up < s.UpdateAt || (up == s.UpdateAt && !s.Refresh && sameCardFields(s, is))
}

// sameCardFields reports whether the record summarized by s already shows what the
// card shows of is.
func sameCardFields(s store.Summary, is guance.Issue) bool {
	return s.StatusType == int(is.StatusType) && s.Level == string(is.Level) && s.NameHash == store.NameHash(is.Name)
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
