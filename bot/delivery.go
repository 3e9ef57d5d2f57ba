package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"issuebot/bot/feishu"
	"issuebot/guance"
	"issuebot/store"
)

// queueCards is the store queue of cards waiting to be posted. A job survives
// restarts; its id is the issue uuid, so queueing an issue twice stores one job.
const queueCards = "cards"

// deliveryBatch bounds how many due jobs one delivery pass reads.
const deliveryBatch = 500

// maxChatsInFlight bounds how many chats are sent to at once.
const maxChatsInFlight = 8

// cardJob is the payload of a queued card: the issue as listed (so posting it needs
// no further Guance request) and the chat it goes to.
type cardJob struct {
	Issue  guance.Issue `json:"issue"`
	ChatID string       `json:"chat_id"`
	// FirstTry is when the card was first sent; Feishu's uuid dedupe lasts an hour.
	FirstTry time.Time `json:"first_try,omitzero"`
}

// routeIssue decides which chat an issue's card goes to: the one place routing lives.
// It returns "" when no chat takes the issue.
func (b *Bot) routeIssue(is guance.Issue) string {
	return b.cfg.ChatID
}

// queueCard stores the card job for a new issue and then marks the issue seen. A crash
// between the two repeats the job's upsert on the next poll, which is harmless.
func (b *Bot) queueCard(ctx context.Context, is guance.Issue) error {
	chat := b.routeIssue(is)
	if chat == "" {
		b.logger.Warn("new issue has no chat to go to; set FEISHU_CHAT_ID", "issue_uuid", is.UUID)
	} else {
		payload, err := json.Marshal(cardJob{Issue: is, ChatID: chat})
		if err != nil {
			return fmt.Errorf("encode card job %s: %w", is.UUID, err)
		}
		if err := b.state.PutJob(ctx, queueCards, store.Job{ID: is.UUID, Payload: payload, NotBefore: b.now()}); err != nil {
			return fmt.Errorf("queue card for issue %s: %w", is.UUID, err)
		}
	}
	if err := b.state.MarkIssuesSeen(ctx, is.UUID); err != nil {
		return fmt.Errorf("mark issue %s seen: %w", is.UUID, err)
	}
	return nil
}

// cardUUID is the Feishu idempotency key of an issue's card in a chat: the same issue
// sent to the same chat again within an hour yields the same message, so a retry or a
// restart between "sent" and "recorded" never posts a second card.
func cardUUID(issueUUID, chatID string) string {
	sum := sha256.Sum256([]byte(issueUUID + "\x00" + chatID))
	return "ib1-" + hex.EncodeToString(sum[:])[:40]
}

// runDelivery posts queued cards until ctx ends. Chats are served concurrently and
// independently, each at most one message per ChatSendInterval, so a chat that fails
// or is throttled never holds up another. On shutdown it lets the card in hand finish.
func (b *Bot) runDelivery(ctx context.Context) {
	var (
		mu     sync.Mutex
		busy   = map[string]bool{}
		nextAt = map[string]time.Time{} // a chat sends again no earlier than this
		wg     sync.WaitGroup
		sem    = make(chan struct{}, maxChatsInFlight)
	)
	defer wg.Wait()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		jobs, err := b.state.DueJobs(ctx, queueCards, b.now(), deliveryBatch)
		if err != nil && ctx.Err() == nil {
			b.logger.Warn("read queued cards", "err", err)
		}
		byChat := map[string][]store.Job{}
		var chats []string
		for _, j := range jobs {
			var p cardJob
			if err := json.Unmarshal(j.Payload, &p); err != nil || p.ChatID == "" {
				b.logger.Error("dropping unreadable card job", "job_id", j.ID, "err", err)
				_ = b.state.DeleteJob(ctx, queueCards, j.ID)
				continue
			}
			if _, ok := byChat[p.ChatID]; !ok {
				chats = append(chats, p.ChatID)
			}
			byChat[p.ChatID] = append(byChat[p.ChatID], j)
		}
		sort.Strings(chats)
		for _, chat := range chats {
			mu.Lock()
			if busy[chat] || b.now().Before(nextAt[chat]) {
				mu.Unlock()
				continue
			}
			busy[chat] = true
			delete(nextAt, chat)
			mu.Unlock()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(chat string, jobs []store.Job) {
				defer wg.Done()
				defer func() { <-sem }()
				next := b.deliverChat(ctx, chat, jobs)
				mu.Lock()
				delete(busy, chat)
				nextAt[chat] = next
				mu.Unlock()
				b.kick(b.wakeDelivery) // more may have become due meanwhile
			}(chat, byChat[chat])
		}
		if n, err := b.state.CountJobs(ctx, queueCards); err == nil {
			b.metrics.cardsQueued.Set(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-b.wakeDelivery:
		case <-tick.C:
		}
	}
}

// deliverChat sends one chat's due cards in order, pacing them, and returns when the
// chat may send again. It stops at the first failure: the failed job is rescheduled,
// and the whole chat waits as long as that job does (a throttled or broken chat is
// not hammered, and its cards keep their order).
func (b *Bot) deliverChat(ctx context.Context, chat string, jobs []store.Job) time.Time {
	for _, j := range jobs {
		if !b.pacer.wait(ctx, chat) {
			break
		}
		err := b.withWorkClaim(ctx, "card:"+j.ID, func() error { return b.deliverCard(ctx, j) })
		if err != nil {
			if !errors.Is(err, errAbandoned) {
				b.logger.Warn("card not delivered yet", "chat_id", chat, "issue_uuid", j.ID, "err", err)
			}
			var later *retryLater
			if errors.As(err, &later) {
				return later.at
			}
			return b.now().Add(b.cfg.ChatSendInterval)
		}
	}
	return b.now().Add(b.cfg.ChatSendInterval)
}

// retryLater is a failure whose job was rescheduled for at.
type retryLater struct {
	cause error
	at    time.Time
}

func (e *retryLater) Error() string { return e.cause.Error() }
func (e *retryLater) Unwrap() error { return e.cause }

// deliverCard posts one queued card, records it, and removes the job — in that order.
// Once a card is being sent it is finished even if shutdown begins (bounded by a
// timeout), so SIGTERM never leaves a sent card unrecorded.
func (b *Bot) deliverCard(ctx context.Context, j store.Job) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var p cardJob
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return fmt.Errorf("decode card job %s: %w", j.ID, err)
	}
	is := p.Issue
	if rec, err := b.state.GetIssue(wctx, is.UUID); err == nil && rec.CardMessageID != "" {
		// Recorded by a run that stopped before removing the job.
		return b.state.DeleteJob(wctx, queueCards, j.ID)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return b.reschedule(wctx, j, p, fmt.Errorf("read issue record: %w", err))
	}
	card, err := RenderCard(b.cardData(is, 1))
	if err != nil {
		return b.reschedule(wctx, j, p, fmt.Errorf("render card: %w", err))
	}
	if p.FirstTry.IsZero() {
		// Written ahead of the send, so that a restart knows how old the first try is.
		p.FirstTry = b.now()
		if payload, err := json.Marshal(p); err == nil {
			j.Payload = payload
			if err := b.state.PutJob(wctx, queueCards, j); err != nil {
				return fmt.Errorf("save card job %s: %w", j.ID, err)
			}
		}
	} else if b.now().Sub(p.FirstTry) > 55*time.Minute {
		b.logger.Warn("retrying a card after Feishu's one-hour dedupe window; a lost earlier answer could show as a second card",
			"issue_uuid", is.UUID, "chat_id", p.ChatID)
	}
	sent, err := b.feishu.SendCard(wctx, p.ChatID, card, cardUUID(is.UUID, p.ChatID))
	if err != nil {
		return b.reschedule(wctx, j, p, err)
	}
	if b.afterSend != nil {
		if err := b.afterSend(is.UUID); err != nil {
			return errAbandoned
		}
	}
	rec := storeIssue(is, p.ChatID, sent.MessageID, b.now())
	rec.Snapshot = b.snapshot(is)
	if err := b.state.PutIssue(wctx, rec); err != nil {
		// The card is out; the job stays, and its retry (same uuid) gets the same message.
		return b.reschedule(wctx, j, p, fmt.Errorf("record card %s: %w", sent.MessageID, err))
	}
	if err := b.state.DeleteJob(wctx, queueCards, j.ID); err != nil {
		b.logger.Warn("remove delivered card job; it will be skipped next time", "issue_uuid", is.UUID, "err", err)
	}
	b.metrics.cardsSent.Inc()
	if !is.CreateAt.IsZero() {
		b.metrics.cardLatency.Observe(max(b.now().Sub(is.CreateAt.Time()), 0).Seconds())
	}
	b.logger.Info("issue card sent", "issue_uuid", is.UUID, "chat_id", p.ChatID, "message_id", sent.MessageID)
	return nil
}

// reschedule puts a failed job back with a backoff that honours Feishu's reset hint.
// Errors that a retry cannot cure (bot not in the chat, say) are retried slowly, so
// an operator can fix the cause without losing the card.
func (b *Bot) reschedule(ctx context.Context, j store.Job, p cardJob, cause error) error {
	j.Attempts++
	var delay time.Duration
	if feishu.Retryable(ctx, cause) {
		delay = newBackoff(b.cfg.RetryBase, 5*time.Minute).after(j.Attempts)
		delay = max(delay, feishu.RetryAfter(cause))
	} else {
		delay = 10 * time.Minute
		b.metrics.cardFailures.Inc()
		b.logger.Error("card refused by Feishu; retrying in 10 minutes", "issue_uuid", p.Issue.UUID,
			"chat_id", p.ChatID, "attempts", j.Attempts, "err", cause)
	}
	if payload, err := json.Marshal(p); err == nil {
		j.Payload = payload
	}
	j.NotBefore = b.now().Add(delay)
	if err := b.state.PutJob(ctx, queueCards, j); err != nil {
		return fmt.Errorf("reschedule card job %s after %v: %w", j.ID, cause, err)
	}
	return &retryLater{cause: cause, at: j.NotBefore}
}

// cardData gathers what the card of is shows.
func (b *Bot) cardData(is guance.Issue, rev int64) CardData {
	d := CardData{
		Issue: is, Revision: rev, ConsoleURL: b.cfg.ConsoleURL, ChannelName: b.cfg.Channel,
		Location: b.cfg.Location,
	}
	if l, ok := b.levels.get(is.Level); ok {
		d.LevelName, d.LevelColor = l.Name, l.Color
	}
	return d
}
