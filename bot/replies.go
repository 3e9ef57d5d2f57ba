package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"issuebot/bot/feishu"
	"issuebot/guance"
	"issuebot/store"
)

// queueReplies is the store queue of chat messages waiting to become Guance replies.
// Jobs survive restarts, so a reply written while Guance is throttled or down is
// posted once it recovers.
const queueReplies = "replies"

// messageDedupeTTL is how long a Feishu message id is remembered: Feishu redelivers
// for about 7 hours (15 s, 5 min, 1 h, 6 h), sometimes with new event ids.
const messageDedupeTTL = 24 * time.Hour

// replyNotifyAfter is how many failed attempts pass before the chat is told that a
// reply is stuck (it is still retried).
const replyNotifyAfter = 5

// replyJob is a chat message on its way to Guance.
type replyJob struct {
	MessageID    string    `json:"message_id"`
	ChatID       string    `json:"chat_id"`
	IssueUUID    string    `json:"issue_uuid"`
	Text         string    `json:"text"`
	SenderOpenID string    `json:"sender_open_id"`
	SenderName   string    `json:"sender_name,omitempty"` // a mention's name, as a fallback
	Received     time.Time `json:"received"`
	// Content is the final reply text, fixed at the first attempt.
	Content string `json:"content,omitempty"`
	// Attempted is set (with AttemptedAt) before reply/create, and cleared when Guance
	// answered that it did not create the reply: while set, the outcome of an earlier
	// attempt is unknown (a crash, a timeout, a 5xx), and the next attempt first looks
	// for the reply in Guance.
	Attempted   bool      `json:"attempted,omitempty"`
	AttemptedAt time.Time `json:"attempted_at,omitzero"`
	// Notified is set once the chat was told the reply is delayed.
	Notified bool `json:"notified,omitempty"`
}

// HandleMessage receives im.message.receive_v1. A message in a card's thread (or one
// that addresses the bot with #issue_uuid#text) is queued to become a Guance reply;
// @bot help answers with a help card; anything else is ignored. It only reads and
// writes the store, so the event is acknowledged well inside Feishu's 3 s.
func (b *Bot) HandleMessage(ctx context.Context, m feishu.Message) error {
	b.metrics.observeEvent("message", b.now(), m.EventTime)
	// The intake's context ends at shutdown; a message being taken in is finished.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	botID := b.botID()
	if m.SenderType != "user" || (botID != "" && m.SenderOpenID == botID) {
		// Only people's messages are synced: another bot's posts in a card's thread
		// (the SDK documents "user" and "bot"; the platform also sends "app") are not
		// someone's reply.
		return nil
	}
	log := b.logger.With("message_id", m.MessageID, "chat_id", m.ChatID)

	rec, inThread, err := b.threadIssue(ctx, m)
	if err != nil {
		return err // the store is unreachable: let Feishu deliver again
	}
	addressed := m.ChatType == "p2p" || mentionsBot(m, botID)
	if !inThread && !addressed {
		return nil
	}
	if inThread {
		b.noteActivity(ctx, rec)
	}
	text := messageText(m, botID)
	cmd := parseCommand(text, addressed)
	issueUUID := rec.IssueUUID
	switch cmd.kind {
	case cmdHelp:
		return b.once(ctx, m, func() { b.sendHelp(m) })
	case cmdResolve, cmdPending, cmdReopen:
		if !inThread {
			return b.once(ctx, m, func() { b.sendNotice(m, noticeNotInThread) })
		}
		return b.queueStatusCommand(ctx, m, rec, cmd.kind)
	case cmdStatus:
		return b.once(ctx, m, func() { b.sendStatus(m) })
	case cmdCompat:
		issueUUID, text = cmd.issueUUID, cmd.text
	case cmdNone:
		if !inThread {
			return b.once(ctx, m, func() { b.sendHelp(m) })
		}
	}
	if isPrivate(text) || text == "" {
		return nil
	}
	job := replyJob{
		MessageID: m.MessageID, ChatID: m.ChatID, IssueUUID: issueUUID, Text: text,
		SenderOpenID: m.SenderOpenID, Received: b.now(),
	}
	for _, mn := range m.Mentions {
		if mn.OpenID != "" && mn.OpenID == m.SenderOpenID {
			job.SenderName = mn.Name
		}
	}
	first, err := b.state.Claim(ctx, "msg:"+m.MessageID, messageDedupeTTL)
	if err != nil {
		return fmt.Errorf("claim message %s: %w", m.MessageID, err)
	}
	if !first {
		log.Debug("duplicate message delivery ignored")
		return nil
	}
	payload, err := json.Marshal(job)
	if err == nil {
		err = b.state.PutJob(ctx, queueReplies, store.Job{ID: m.MessageID, Payload: payload, NotBefore: b.now()})
	}
	if err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), "msg:"+m.MessageID)
		return fmt.Errorf("queue reply %s: %w", m.MessageID, err)
	}
	if inThread && m.ThreadID != "" && rec.ThreadID == "" {
		if err := b.state.LinkThread(ctx, m.ThreadID, rec.IssueUUID); err != nil {
			log.Warn("link thread to issue", "issue_uuid", rec.IssueUUID, "err", err)
		}
	}
	log.Info("chat message queued for Guance", "issue_uuid", issueUUID)
	b.kick(b.wakeReplies)
	return nil
}

// threadIssue finds the issue whose card thread m belongs to, by root id then thread id.
func (b *Bot) threadIssue(ctx context.Context, m feishu.Message) (store.Issue, bool, error) {
	for _, id := range []string{m.RootID, m.ThreadID} {
		if id == "" {
			continue
		}
		rec, err := b.state.IssueByMessage(ctx, id)
		if err == nil {
			return rec, true, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Issue{}, false, fmt.Errorf("look up thread %s: %w", id, err)
		}
	}
	return store.Issue{}, false, nil
}

// once runs an answer to m at most once per message id, in the background.
func (b *Bot) once(ctx context.Context, m feishu.Message, answer func()) error {
	first, err := b.state.Claim(ctx, "msg:"+m.MessageID, messageDedupeTTL)
	if err != nil {
		return fmt.Errorf("claim message %s: %w", m.MessageID, err)
	}
	if first {
		b.background(answer)
	}
	return nil
}

// runReplies posts queued chat messages to Guance until ctx ends, one at a time (the
// Guance budget is the bottleneck, and people's writes go first in it).
func (b *Bot) runReplies(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		jobs, err := b.state.DueJobs(ctx, queueReplies, b.now(), 100)
		if err != nil && ctx.Err() == nil {
			b.logger.Warn("read queued replies", "err", err)
		}
		for _, j := range jobs {
			if ctx.Err() != nil {
				return
			}
			if err := b.withWorkClaim(ctx, "reply:"+j.ID, func() error { return b.postReply(ctx, j) }); err != nil && !errors.Is(err, errAbandoned) {
				b.logger.Warn("reply not posted yet", "message_id", j.ID, "err", err)
			}
		}
		if n, err := b.state.CountJobs(ctx, queueReplies); err == nil {
			b.metrics.repliesQueued.Set(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-b.wakeReplies:
		case <-tick.C:
		}
	}
}

// postReply posts one queued message as a Guance reply, records the reply as the
// bot's own, acknowledges it with a reaction and removes the job.
func (b *Bot) postReply(ctx context.Context, j store.Job) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	p, ok, err := decodeJob[replyJob](wctx, b, queueReplies, j)
	if !ok {
		return err
	}
	gctx := guance.WithPriority(wctx, guance.PriorityHigh)
	if p.Content == "" {
		p.Content = replyContent(b.senderName(wctx, p), p.Text)
	}
	if p.Attempted {
		// An earlier attempt may have been accepted without us hearing the answer.
		if r, err := b.findOwnReply(gctx, p); err != nil {
			return b.rescheduleReply(wctx, j, p, err)
		} else if r != "" {
			return b.replyDone(wctx, j, p, r)
		}
	} else {
		p.Attempted, p.AttemptedAt = true, b.now()
	}
	if err := b.saveReplyJob(wctx, j, p); err != nil {
		return err
	}
	r, err := b.guance.CreateReply(gctx, p.IssueUUID, p.Content)
	if err != nil {
		var ge *guance.Error
		answered := errors.As(err, &ge)
		if answered && !ge.Temporary() && !errors.Is(err, guance.ErrBadKey) {
			// Guance said no for a reason a retry will not change.
			b.metrics.replyFailures.Inc()
			b.logger.Error("Guance refused a reply", "issue_uuid", p.IssueUUID, "message_id", p.MessageID, "err", err)
			notice := noticeRefused
			if errors.Is(err, guance.ErrNotFound) {
				notice = noticeNoIssue
			}
			b.notify(wctx, p.MessageID, notice)
			return b.state.DeleteJob(wctx, queueReplies, j.ID)
		}
		if answered && ge.StatusCode < 500 {
			// A throttle or a refused key: Guance did not create the reply.
			p.Attempted, p.AttemptedAt = false, time.Time{}
		}
		return b.rescheduleReply(wctx, j, p, err)
	}
	if b.afterReply != nil {
		if err := b.afterReply(p.MessageID); err != nil {
			return errAbandoned
		}
	}
	b.learnKey(wctx, r.Creator)
	return b.replyDone(wctx, j, p, r.UUID)
}

// replyDone records a posted reply, reacts to the chat message, and drops the job.
func (b *Bot) replyDone(ctx context.Context, j store.Job, p replyJob, replyUUID string) error {
	if replyUUID != "" {
		if err := b.state.AddOwnReply(ctx, p.IssueUUID, replyUUID); err != nil {
			return b.rescheduleReply(ctx, j, p, fmt.Errorf("record own reply %s: %w", replyUUID, err))
		}
	}
	if err := b.countSynced(ctx, p.IssueUUID, "chat:"+p.MessageID); err != nil {
		b.logger.Warn("count a synced reply on the card", "issue_uuid", p.IssueUUID, "err", err)
	}
	if err := b.feishu.AddReaction(ctx, p.MessageID, "DONE"); err != nil {
		b.logger.Warn("react to a synced message", "message_id", p.MessageID, "err", err)
	}
	if err := b.state.DeleteJob(ctx, queueReplies, j.ID); err != nil {
		return fmt.Errorf("remove reply job %s: %w", j.ID, err)
	}
	b.metrics.repliesToGuance.Inc()
	b.metrics.replyLatency.Observe(max(b.now().Sub(p.Received), 0).Seconds())
	b.logger.Info("chat message posted to Guance", "issue_uuid", p.IssueUUID, "message_id", p.MessageID, "reply_uuid", replyUUID)
	return nil
}

// findOwnReply looks among the issue's newest replies for one the bot's key wrote with
// exactly this content. It returns the reply uuid, or "".
func (b *Bot) findOwnReply(ctx context.Context, p replyJob) (string, error) {
	replies, _, err := b.guance.ListReplies(ctx, p.IssueUUID, guance.ReplyListOptions{PageSize: 20})
	if err != nil {
		return "", fmt.Errorf("look for an earlier attempt: %w", err)
	}
	for _, r := range replies {
		// The bot's key, the same text, written no earlier than the first unanswered
		// attempt (a minute of clock skew allowed), and not already claimed by another
		// message: two identical messages must make two replies.
		if !b.byBotKey(r.Creator) || r.Content != p.Content || r.CreateAt.Unix() < p.AttemptedAt.Add(-time.Minute).Unix() {
			continue
		}
		own, err := b.state.IsOwnReply(ctx, r.UUID)
		if err != nil {
			return "", fmt.Errorf("check reply %s: %w", r.UUID, err)
		}
		if !own {
			return r.UUID, nil
		}
	}
	return "", nil
}

func (b *Bot) saveReplyJob(ctx context.Context, j store.Job, p replyJob) error {
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode reply job %s: %w", j.ID, err)
	}
	j.Payload = payload
	if err := b.state.PutJob(ctx, queueReplies, j); err != nil {
		return fmt.Errorf("save reply job %s: %w", j.ID, err)
	}
	return nil
}

// rescheduleReply puts a reply back with a backoff. After a few failures the chat is
// told, once, that Guance is unavailable and the reply will follow.
func (b *Bot) rescheduleReply(ctx context.Context, j store.Job, p replyJob, cause error) error {
	j.Attempts++
	if j.Attempts >= replyNotifyAfter && !p.Notified {
		p.Notified = true
		b.notify(ctx, p.MessageID, noticeDelayed)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode reply job %s: %w", j.ID, err)
	}
	j.Payload = payload
	delay := newBackoff(b.cfg.RetryBase, 2*time.Minute).after(j.Attempts)
	if errors.Is(cause, guance.ErrBadKey) {
		// Someone has to fix GUANCE_API_KEY; keep the reply until then.
		delay = 10 * time.Minute
		b.logger.Error("Guance refused GUANCE_API_KEY; the reply waits until it is fixed", "message_id", p.MessageID, "err", cause)
	}
	j.NotBefore = b.now().Add(delay)
	if err := b.state.PutJob(ctx, queueReplies, j); err != nil {
		return fmt.Errorf("reschedule reply %s after %v: %w", j.ID, cause, err)
	}
	return cause
}

// senderName is the display name for a reply's author: the contact API's name, else
// the name the sender was mentioned by, else the open_id.
func (b *Bot) senderName(ctx context.Context, p replyJob) string {
	nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if name, err := b.feishu.UserName(nctx, p.SenderOpenID); err == nil && name != "" {
		return name
	} else if err != nil {
		b.logger.Warn("look up sender name; using a fallback", "open_id", p.SenderOpenID, "err", err)
	}
	if p.SenderName != "" {
		return p.SenderName
	}
	if p.SenderOpenID != "" {
		return p.SenderOpenID
	}
	return "?"
}

// replyContent formats a reply as Guance shows it, within Guance's length limit.
func replyContent(author, text string) string {
	s := "[飞书] " + author + ": " + text
	return Truncate(s, guance.MaxReplyRunes, "\n…（已截断 / truncated）")
}

// feedbackUUID is the Feishu idempotency key of the bot's answer to a message.
func feedbackUUID(messageID, kind string) string {
	sum := sha256.Sum256([]byte(messageID + "\x00" + kind))
	return "ibf-" + hex.EncodeToString(sum[:])[:40]
}

// noteActivity records chat activity in an issue's thread (at most once a minute), so
// the watcher looks at that issue's Guance replies more often.
func (b *Bot) noteActivity(ctx context.Context, rec store.Issue) {
	if b.now().Sub(rec.LastActivity) < time.Minute {
		return
	}
	now := b.now()
	if _, _, err := b.updateIssue(ctx, rec.IssueUUID, func(r *store.Issue) error {
		r.LastActivity = now
		return nil
	}); err != nil {
		b.logger.Warn("record thread activity", "issue_uuid", rec.IssueUUID, "err", err)
	}
}

// queueStatusCommand queues the status change a text command in a card's thread asks
// for; the status worker makes it, patches the card and reacts to the message.
func (b *Bot) queueStatusCommand(ctx context.Context, m feishu.Message, rec store.Issue, kind commandKind) error {
	action := map[commandKind]string{cmdResolve: cardActionResolve, cmdPending: cardActionPending, cmdReopen: cardActionReopen}[kind]
	first, err := b.state.Claim(ctx, "msg:"+m.MessageID, messageDedupeTTL)
	if err != nil {
		return fmt.Errorf("claim message %s: %w", m.MessageID, err)
	}
	if !first {
		return nil
	}
	job := statusJob{
		IssueUUID: rec.IssueUUID, Target: CardAction{Action: action}.Status(), Action: action,
		WhoOpenID: m.SenderOpenID, MessageID: m.MessageID, At: b.now(),
	}
	if err := b.queueStatusJob(ctx, "msg:"+m.MessageID, job); err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), "msg:"+m.MessageID)
		return err
	}
	b.logger.Info("status command queued", "issue_uuid", rec.IssueUUID, "message_id", m.MessageID, "action", action)
	return nil
}
