package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/jobs"
	"issuebot/guance"
	"issuebot/store"
)

// queueCards is the store queue of cards waiting to be posted. A job survives
// restarts; its id is the issue uuid and the chat (cardJobID), so queueing an issue's
// card for a chat twice stores one job.
const queueCards = "cards"

// maxChatsInFlight bounds how many chats are sent to at once.
const maxChatsInFlight = 8

// cardJob is the payload of a queued card: the issue as listed (so posting it needs
// no further Guance request) and the chat it goes to.
type cardJob struct {
	Issue  guance.Issue `json:"issue"`
	ChatID string       `json:"chat_id"`
	// FirstTry is when the card was first sent; Feishu's uuid dedupe lasts an hour.
	FirstTry time.Time `json:"first_try,omitzero"`
	// Thread, for a card asked for from a storm digest, is the digest's message: the
	// card is posted, and the digest's thread says so.
	Thread string `json:"thread,omitempty"`
}

// cardJobID is the id of an issue's card job for a chat.
func cardJobID(issueUUID, chatID string) string { return issueUUID + "@" + chatID }

// queueCard stores a card job for a new issue in every chat its routes name — or, in
// a chat going through a storm, puts the issue into the chat's digest — and then marks
// the issue seen. A crash between the two repeats this on the next poll, which is
// harmless: an issue in a chat's digest has a card entry there, which its card job (if
// an earlier try queued one) takes as done.
func (b *Bot) queueCard(ctx context.Context, is guance.Issue) error {
	chats, err := b.routeIssue(ctx, is)
	if err != nil {
		return fmt.Errorf("route issue %s: %w", is.UUID, err)
	}
	if len(chats) == 0 {
		b.metrics.unrouted.Inc()
		b.logger.Warn("new issue matches no route and FEISHU_CHAT_ID is empty: no chat gets it", "issue_uuid", is.UUID,
			"level", string(is.Level))
	}
	for _, chat := range chats {
		job := cardJob{Issue: is, ChatID: chat}
		storm, err := b.stormGate(ctx, chat, is.UUID)
		if err != nil {
			return err
		}
		if storm != "" {
			if err := b.digestIssue(ctx, job, storm); err != nil {
				return err
			}
			continue
		}
		if err := b.cards.Enqueue(ctx, cardJobID(is.UUID, chat), job, b.now()); err != nil {
			return fmt.Errorf("queue card for issue %s in chat %s: %w", is.UUID, chat, err)
		}
	}
	if err := b.state.MarkIssuesSeen(ctx, is.UUID); err != nil {
		return fmt.Errorf("mark issue %s seen: %w", is.UUID, err)
	}
	return nil
}

// reroute sends an issue whose card was queued for a chat the bot has left where the
// remaining routes say, to the chats that have no card of it yet.
func (b *Bot) reroute(ctx context.Context, is guance.Issue, rec store.Issue) error {
	chats, err := b.routeIssue(ctx, is)
	if err != nil {
		return fmt.Errorf("route issue %s again: %w", is.UUID, err)
	}
	for _, chat := range chats {
		if rec.Card(chat) != nil {
			continue
		}
		if err := b.cards.Enqueue(ctx, cardJobID(is.UUID, chat), cardJob{Issue: is, ChatID: chat}, b.now()); err != nil {
			return fmt.Errorf("queue card for issue %s in chat %s: %w", is.UUID, chat, err)
		}
	}
	b.logger.Info("a card queued for a chat the bot left goes where the remaining routes say", "issue_uuid", is.UUID,
		"chats", chats)
	return nil
}

// cardQueued reports whether a card is queued (perhaps sent and not yet recorded) for
// the issue, or, with issueUUID "", for any issue of the chat.
func (b *Bot) cardQueued(ctx context.Context, issueUUID, chatID string) (bool, error) {
	queued, err := b.cards.Jobs(ctx)
	if err != nil {
		return false, err
	}
	for _, j := range queued {
		if (issueUUID != "" && j.Payload.Issue.UUID == issueUUID) || (issueUUID == "" && j.Payload.ChatID == chatID) {
			return true, nil
		}
	}
	return false, nil
}

// cardUUID is the Feishu idempotency key of an issue's card in a chat: the same issue
// sent to the same chat again within an hour yields the same message, so a retry or a
// restart between "sent" and "recorded" never posts a second card.
func cardUUID(issueUUID, chatID string) string {
	sum := sha256.Sum256([]byte(issueUUID + "\x00" + chatID))
	return "ib1-" + hex.EncodeToString(sum[:])[:40]
}

// deliverCard posts one queued card and records it; the engine then removes the job.
// The cards of one chat go in order (the chat is the job's key), at most one per
// ChatSendInterval, and a chat that fails or is throttled holds up no other. Once a
// card is being sent it is finished even if shutdown begins (bounded by a timeout), so
// SIGTERM never leaves a sent card unrecorded. A card for an issue that already has
// cards elsewhere shows the record as it is now.
func (b *Bot) deliverCard(ctx context.Context, j *jobs.Job[cardJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	p := &j.Payload
	is := p.Issue
	rec, err := b.state.GetIssue(wctx, is.UUID)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read issue record: %w", err)
	}
	if c := rec.Card(p.ChatID); exists && c != nil && (c.MessageID != "" || p.Thread == "") {
		return nil // recorded by a run that stopped before removing the job
	}
	if left, err := b.chatLeft(wctx, p.ChatID); err != nil || left {
		if err != nil {
			return err
		}
		return b.reroute(wctx, is, rec) // the bot left the chat: nothing more goes there
	}
	if p.Thread != "" && !exists {
		return nil // asked for from a digest, but the issue's record is gone
	}
	rev, card := int64(1), []byte(nil)
	if exists && !rec.Gone {
		rev = rec.CardRevision
		card, err = b.recordCard(wctx, rec, store.Card{ChatID: p.ChatID})
	} else {
		card, err = cards.Render(b.cardData(is, rev))
	}
	if err != nil {
		return fmt.Errorf("render card: %w", err)
	}
	if p.FirstTry.IsZero() {
		// Written ahead of the send, so that a restart knows how old the first try is.
		p.FirstTry = b.now()
		if err := j.Save(wctx); err != nil {
			return err
		}
	} else if b.now().Sub(p.FirstTry) > 55*time.Minute {
		b.logger.Warn("retrying a card after Feishu's one-hour dedupe window; a lost earlier answer could show as a second card",
			"issue_uuid", is.UUID, "chat_id", p.ChatID)
	}
	if !b.pacer.wait(ctx, p.ChatID) {
		return errAbandoned
	}
	sent, err := b.feishu.SendCard(wctx, p.ChatID, card, cardUUID(is.UUID, p.ChatID))
	if err != nil {
		return fmt.Errorf("send card to chat %s: %w", p.ChatID, err)
	}
	if b.afterSend != nil {
		if err := b.afterSend(is.UUID); err != nil {
			return errAbandoned
		}
	}
	sentAt := b.now()
	// Scheduled before the card is recorded, so that every recorded card has its note;
	// on failure the retry gets the same message back and schedules it again.
	if err := b.queueExpiry(wctx, is.UUID, p.ChatID, sentAt); err != nil {
		return err
	}
	c := store.Card{ChatID: p.ChatID, MessageID: sent.MessageID, SentAt: sentAt, PatchedRevision: rev}
	if p.Thread != "" {
		if cur := rec.Card(p.ChatID); cur != nil {
			c.Digest = cur.Digest // still listed in its digest, now as carded
		}
		b.pointFromDigest(wctx, p, sent.MessageID)
	}
	base := storeIssue(is)
	base.Snapshot = b.snapshot(is)
	rec, err = b.state.AddCard(wctx, base, c)
	if err != nil {
		// The card is out; the job stays, and its retry (same uuid) gets the same message.
		return fmt.Errorf("record card %s: %w", sent.MessageID, err)
	}
	if left, err := b.chatLeft(wctx, p.ChatID); err == nil && left {
		// The bot left the chat while this card was on its way: forget it again, as the
		// goodbye did the chat's other cards.
		if err := b.forgetCard(wctx, is.UUID, p.ChatID); err != nil {
			return err
		}
		return nil
	}
	if rec.CardRevision > rev {
		// The issue changed while its card was on its way.
		if err := b.queuePatch(wctx, is.UUID); err != nil {
			b.logger.Warn("queue the patch of a new card", "issue_uuid", is.UUID, "err", err)
		}
	}
	if s, err := b.loadStorm(wctx, p.ChatID); err == nil && s.current() != nil {
		// The digest counts the cards of the window that started the storm once they are
		// recorded.
		if err := b.queueDigest(wctx, p.ChatID); err != nil {
			b.logger.Warn("queue the digest's render", "chat_id", p.ChatID, "err", err)
		}
	}
	b.metrics.cardsSent.Inc()
	if !is.CreateAt.IsZero() {
		b.metrics.cardLatency.Observe(max(b.now().Sub(is.CreateAt.Time()), 0).Seconds())
	}
	b.logger.Info("issue card sent", "issue_uuid", is.UUID, "chat_id", p.ChatID, "message_id", sent.MessageID)
	return nil
}

// cardData gathers what the card of is shows.
func (b *Bot) cardData(is guance.Issue, rev int64) cards.Data {
	d := cards.Data{
		Issue: is, Revision: rev, ConsoleURL: b.cfg.ConsoleURL, ChannelName: b.cfg.Channel,
		Location: b.cfg.Location,
	}
	if l, ok := b.levels.get(is.Level); ok {
		d.LevelName, d.LevelColor = l.Name, l.Color
	}
	return d
}
