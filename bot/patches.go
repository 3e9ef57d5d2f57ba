package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/store"
)

// Card patches: every change the card shows re-renders it in place, at most once a
// second per card; a card too old to patch gets a fresh one in its thread, and a quiet
// card says a day ahead that its buttons expire.

// queuePatches is the store queue of cards to re-render. A job's id is the issue uuid,
// so any number of changes to one issue make one job, which re-renders every card of
// the issue (one per chat) from the record when it runs (the latest state wins). Each
// card also has a job "expiry:<issue uuid>@<chat id>", due a day before Feishu stops
// taking its buttons.
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

// queuePatch asks for an issue's cards to be re-rendered, no sooner than patchEvery
// after the issue's last patch.
func (b *Bot) queuePatch(ctx context.Context, issueUUID string) error {
	at := latest(b.now(), b.patchClock.last(issueUUID).Add(patchEvery))
	if err := b.patches.Enqueue(ctx, issueUUID, patchJob{}, at); err != nil {
		return fmt.Errorf("queue card patch for issue %s: %w", issueUUID, err)
	}
	return nil
}

// patchClock remembers when each issue's cards were last patched (this process's
// view; the leader does every patch).
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

// patchJob is a queued re-render of an issue's cards; the job's id is the issue uuid,
// so changes coalesce into one job, and the cards show the record as it is when the
// job runs (the latest state wins). Expiry marks the job that adds the buttons' expiry
// note to a quiet card: the card of ChatID (every card, in jobs of an older version).
type patchJob struct {
	IssueUUID string `json:"issue_uuid,omitempty"`
	ChatID    string `json:"chat_id,omitempty"`
	Expiry    bool   `json:"expiry,omitempty"`
	// Digest marks the render of ChatID's storm digests (id "digest:<chat id>"), and
	// StormEnd the check whether its storm is over (id "stormend:<chat id>").
	Digest   bool `json:"digest,omitempty"`
	StormEnd bool `json:"storm_end,omitempty"`
}

// queueExpiry schedules the expiry note of the card sent to chatID at sentAt.
func (b *Bot) queueExpiry(ctx context.Context, issueUUID, chatID string, sentAt time.Time) error {
	at := sentAt.Add(patchMaxAge - expiryLead)
	job := patchJob{IssueUUID: issueUUID, ChatID: chatID, Expiry: true}
	if err := b.patches.Enqueue(ctx, "expiry:"+issueUUID+"@"+chatID, job, at); err != nil {
		return fmt.Errorf("schedule the expiry note of issue %s in chat %s: %w", issueUUID, chatID, err)
	}
	return nil
}

// requeuePatches queues a patch for every issue with a card that shows an older
// revision than its record (a patch cut short by a crash); the leader runs it when it
// starts. It reads the summaries only.
func (b *Bot) requeuePatches(ctx context.Context) error {
	sums, err := b.state.ListSummaries(ctx)
	if err != nil {
		return fmt.Errorf("list issue summaries for pending patches: %w", err)
	}
	for _, s := range sums {
		if s.Behind {
			if err := b.queuePatch(ctx, s.IssueUUID); err != nil {
				return err
			}
		}
	}
	return nil
}

// patchCard renders an issue's cards from its record and patches each one that shows
// an older revision in place. An issue patched less than patchEvery ago waits for its
// turn, so a burst of changes makes at most two patches a second per card; a card too
// old to patch gets a fresh card in its thread instead. The job stays until every card
// is patched: a failure (rendering included) is retried, the cards already patched are
// not patched again, and a change made while the patch is under way queues the job
// again, which the engine keeps.
func (b *Bot) patchCard(ctx context.Context, j *jobs.Job[patchJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	switch {
	case j.Payload.Digest:
		return b.renderDigests(wctx, j.Payload.ChatID)
	case j.Payload.StormEnd:
		return b.stormEnd(wctx, j.Payload.ChatID)
	}
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
		due := false
		for _, c := range rec.Cards {
			if j.Payload.ChatID == "" || c.ChatID == j.Payload.ChatID {
				due = due || b.now().Sub(c.SentAt) >= patchMaxAge-expiryLead
			}
		}
		if rec.Gone || !due {
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
	if len(rec.Snapshot) == 0 && !rec.Gone {
		// A record of an older version: rendering it now would blank the card's body.
		// The watcher reads the issue first.
		if !rec.Refresh {
			if _, _, err := b.updateIssue(wctx, issue, func(x *store.Issue) error {
				x.Refresh = true
				return nil
			}); err != nil {
				return err
			}
		}
		return jobs.Later(b.cfg.BudgetWindow/6, errors.New("waiting for the issue to be read again"))
	}
	var errs []error
	for _, c := range rec.Cards {
		if c.Digest != "" {
			// The issue's line in the digest shows the change too.
			errs = append(errs, b.queueDigest(wctx, c.ChatID))
		}
		if c.MessageID == "" || c.PatchedRevision >= rec.CardRevision {
			continue // only in a digest, or already shown (a click's answer, say)
		}
		if left, err := b.chatLeft(wctx, c.ChatID); err != nil || left {
			errs = append(errs, err)
			continue
		}
		b.patchClock.mark(rec.IssueUUID, b.now())
		if err := b.patchOne(wctx, rec, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// patchOne re-renders one card of an issue.
func (b *Bot) patchOne(ctx context.Context, rec store.Issue, c store.Card) error {
	if b.now().Sub(c.SentAt) > patchMaxAge {
		return b.recard(ctx, rec, c)
	}
	card, err := b.recordCard(ctx, rec, c)
	if err != nil {
		return fmt.Errorf("render card of issue %s: %w", rec.IssueUUID, err)
	}
	err = b.feishu.PatchCard(ctx, c.MessageID, card)
	var fe *feishu.Error
	if errors.As(err, &fe) && fe.PatchWindowEnded() {
		return b.recard(ctx, rec, c)
	}
	if errors.As(err, &fe) && fe.MessageGone() {
		// Someone recalled the card: it stays gone (Guance replies go to the chat). The
		// revision counts as done, so it is not tried again, not even after a restart.
		b.logger.Warn("the issue's card was recalled; it is no longer updated", "issue_uuid", rec.IssueUUID,
			"chat_id", c.ChatID, "message_id", c.MessageID, "revision", rec.CardRevision)
		return b.patched(ctx, rec.IssueUUID, c.MessageID, rec.CardRevision)
	}
	if err != nil {
		return fmt.Errorf("patch card %s: %w", c.MessageID, err)
	}
	b.metrics.cardPatches.Inc()
	return b.patched(ctx, rec.IssueUUID, c.MessageID, rec.CardRevision)
}

// patched records that the card message shows revision rev, and queues another patch
// if the record moved on meanwhile. A later revision recorded as shown (a click's
// answer while this patch was under way) is lowered to rev: which of the two Feishu
// applied last is unknown, so the card is patched once more with the latest.
func (b *Bot) patched(ctx context.Context, issueUUID, messageID string, rev int64) error {
	behind := false
	_, _, err := b.updateIssue(ctx, issueUUID, func(r *store.Issue) error {
		behind = false
		for i := range r.Cards {
			if r.Cards[i].MessageID == messageID {
				behind = r.CardRevision > rev
				if r.Cards[i].PatchedRevision == rev {
					return errUnchanged
				}
				r.Cards[i].PatchedRevision = rev
				return nil
			}
		}
		return errUnchanged // moved to another message meanwhile
	})
	if err != nil {
		return err
	}
	if behind {
		return b.queuePatch(ctx, issueUUID)
	}
	return nil
}

// recard posts a fresh card into the thread of a card too old to patch, and moves the
// chat's card to it: its buttons work again and later changes patch it.
func (b *Bot) recard(ctx context.Context, rec store.Issue, c store.Card) error {
	rec.CardRevision++
	fresh := store.Card{ChatID: c.ChatID}
	card, err := b.recordCard(ctx, rec, fresh)
	if err != nil {
		return fmt.Errorf("render card of issue %s: %w", rec.IssueUUID, err)
	}
	sum := sha256.Sum256([]byte(rec.IssueUUID + "\x00" + c.MessageID))
	uuid := "ibn-" + hex.EncodeToString(sum[:])[:40]
	if !b.pacer.wait(ctx, c.ChatID) {
		return errAbandoned
	}
	sent, err := b.feishu.ReplyCard(ctx, c.MessageID, card, true, uuid)
	if fe := (*feishu.Error)(nil); errors.As(err, &fe) && fe.MessageGone() {
		// The old card was recalled: as with a patch, the chat's card is given up.
		b.logger.Warn("the issue's card was recalled; it is no longer updated", "issue_uuid", rec.IssueUUID,
			"chat_id", c.ChatID, "message_id", c.MessageID, "revision", rec.CardRevision-1)
		return b.patched(ctx, rec.IssueUUID, c.MessageID, rec.CardRevision-1)
	}
	if err != nil {
		return fmt.Errorf("post a fresh card for issue %s in chat %s: %w", rec.IssueUUID, c.ChatID, err)
	}
	sentAt := b.now()
	// Scheduled before the card moves (see deliverCard).
	if err := b.queueExpiry(ctx, rec.IssueUUID, c.ChatID, sentAt); err != nil {
		return err
	}
	_, _, err = b.updateIssue(ctx, rec.IssueUUID, func(r *store.Issue) error {
		cur := r.Card(c.ChatID)
		if cur == nil || cur.MessageID != c.MessageID {
			return errUnchanged // moved already
		}
		cur.MessageID, cur.SentAt = sent.MessageID, sentAt
		if cur.ThreadID == "" {
			cur.ThreadID = sent.ThreadID
		}
		if r.CardRevision >= rec.CardRevision {
			r.CardRevision++ // changed while the fresh card was being posted: patch it
		} else {
			r.CardRevision = rec.CardRevision
		}
		cur.PatchedRevision = rec.CardRevision
		return nil
	})
	if err != nil {
		// The new card is out; the retry posts with the same uuid and gets it back.
		return fmt.Errorf("record the fresh card %s: %w", sent.MessageID, err)
	}
	b.metrics.cardsSent.Inc()
	b.logger.Info("card older than 14 days: posted a fresh one in its thread", "issue_uuid", rec.IssueUUID,
		"chat_id", c.ChatID, "old_message_id", c.MessageID, "message_id", sent.MessageID)
	return b.patched(ctx, rec.IssueUUID, sent.MessageID, rec.CardRevision)
}
