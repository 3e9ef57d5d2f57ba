package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/feishu"
	"issuebot/bot/jobs"
	"issuebot/bot/plaintext"
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
	// ReplyUUID is the Guance reply once created: a retry after that (a crash while it
	// was being recorded) only finishes the recording.
	ReplyUUID string `json:"reply_uuid,omitempty"`
	// Key is the job's ordering key, fixed when it is queued (see replyKey).
	Key string `json:"key,omitempty"`
	// RootID and ThreadID place a message whose thread was not known to be a card's
	// when it arrived (IssueUUID empty): the job waits until the card is recorded.
	RootID   string `json:"root_id,omitempty"`
	ThreadID string `json:"thread_id,omitempty"`
}

// resolveThread finds the issue of a message queued before its thread was known to
// be a card's. It returns "" once it is clear the thread is not a card's.
func (b *Bot) resolveThread(ctx context.Context, p replyJob) (string, error) {
	rec, ok, err := b.threadIssue(ctx, feishu.Message{RootID: p.RootID, ThreadID: p.ThreadID})
	if err != nil || ok {
		return rec.IssueUUID, err
	}
	waiting, err := b.cardQueued(ctx, "", p.ChatID)
	if err != nil {
		return "", err
	}
	// After the last card of the chat left the queue, a budget window (a minute) more:
	// the record and the job's removal are two writes, perhaps by two processes.
	if waiting || b.now().Sub(p.Received) < b.cfg.BudgetWindow {
		return "", jobs.Later(max(b.cfg.RetryBase, 200*time.Millisecond), errors.New("waiting for the card of this thread to be recorded"))
	}
	return "", nil
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
	addressed := m.ChatType == "p2p" || m.MentionsBot(botID)
	if !inThread && m.RootID != "" {
		// A thread the store does not know may be a card that is out but not recorded
		// yet (its sender was killed between the two, say): while a card of this chat
		// is queued, the message is queued too and waits for the record. The queue is
		// read before the record again: the sender records the card, then drops its job.
		if inThread, err = b.cardQueued(ctx, "", m.ChatID); err != nil {
			return err
		}
		if !inThread {
			if rec, inThread, err = b.threadIssue(ctx, m); err != nil {
				return err
			}
		}
	}
	if !inThread && !addressed {
		return nil
	}
	if inThread && rec.IssueUUID != "" {
		b.noteActivity(ctx, rec)
	}
	text := m.Text(botID)
	cmd := parseCommand(text, addressed)
	issueUUID := rec.IssueUUID
	switch cmd.kind {
	case cmdHelp:
		return b.once(ctx, m, answerHelp, "")
	case cmdList:
		return b.once(ctx, m, answerList, "")
	case cmdBind:
		return b.once(ctx, m, answerBind, cmd.text)
	case cmdUnbind:
		return b.once(ctx, m, answerUnbind, cmd.text)
	case cmdResolve, cmdPending, cmdReopen:
		if !inThread {
			return b.once(ctx, m, noticeNotInThread.kind, "")
		}
		if rec.IssueUUID == "" {
			return b.once(ctx, m, noticeCardPending.kind, "") // its card is not recorded yet
		}
		return b.queueStatusCommand(ctx, m, rec, cmd.kind)
	case cmdStatus:
		return b.once(ctx, m, answerStatus, "")
	case cmdCompat:
		issueUUID, text = cmd.issueUUID, cmd.text
	case cmdNone:
		if !inThread {
			return b.once(ctx, m, answerHelp, "")
		}
	}
	if isPrivate(text) || text == "" {
		return nil
	}
	job := replyJob{
		MessageID: m.MessageID, ChatID: m.ChatID, IssueUUID: issueUUID, Text: text,
		SenderOpenID: m.SenderOpenID, Received: b.now(),
	}
	job.Key = "issue:" + issueUUID
	if issueUUID == "" {
		job.RootID, job.ThreadID = m.RootID, m.ThreadID
		job.Key = "thread:" + m.RootID
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
	if err := b.replies.Enqueue(ctx, m.MessageID, job, b.now()); err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), "msg:"+m.MessageID)
		return fmt.Errorf("queue reply %s: %w", m.MessageID, err)
	}
	if c := rec.Card(m.ChatID); inThread && m.ThreadID != "" && c != nil && c.ThreadID == "" {
		if err := b.linkThread(ctx, rec.IssueUUID, m.ChatID, m.ThreadID); err != nil {
			log.Warn("link thread to issue", "issue_uuid", rec.IssueUUID, "err", err)
		}
	}
	log.Info("chat message queued for Guance", "issue_uuid", issueUUID)
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

// once queues an answer of kind to m (a command with its arguments), at most once per
// message id. If the answer cannot be queued, the claim is given back and the event
// fails, so Feishu delivers it again.
func (b *Bot) once(ctx context.Context, m feishu.Message, kind, args string) error {
	first, err := b.state.Claim(ctx, "msg:"+m.MessageID, messageDedupeTTL)
	if err != nil {
		return fmt.Errorf("claim message %s: %w", m.MessageID, err)
	}
	if !first {
		return nil
	}
	a := answerJob{MessageID: m.MessageID, ChatID: m.ChatID, Kind: kind, Args: args, SenderOpenID: m.SenderOpenID,
		Direct: m.ChatType == "p2p"}
	if err := b.queueAnswer(ctx, a); err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), "msg:"+m.MessageID)
		return err
	}
	return nil
}

// postReply posts one queued chat message as a Guance reply, records the reply as the
// bot's own and acknowledges it with a reaction; the engine then removes the job. The
// messages of one issue go in the order they arrived (the issue is the job's key).
func (b *Bot) postReply(ctx context.Context, j *jobs.Job[replyJob]) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	p := &j.Payload
	if p.IssueUUID == "" {
		id, err := b.resolveThread(wctx, *p)
		if err != nil {
			return err
		}
		if id == "" {
			b.logger.Debug("a message in a thread that is no card's is not synced", "message_id", p.MessageID)
			return nil
		}
		p.IssueUUID = id
		if err := j.Save(wctx); err != nil {
			return err
		}
	}
	if p.ReplyUUID != "" {
		return b.replyDone(wctx, *p, p.ReplyUUID)
	}
	gctx := leaderCall(ctx, wctx)
	if j.Attempts >= replyNotifyAfter && !p.Notified {
		p.Notified = true
		b.notify(wctx, p.MessageID, p.ChatID, noticeDelayed)
	}
	if p.Content == "" {
		p.SenderName = b.senderName(wctx, *p)
		p.Content = replyContent(p.SenderName, b.replyVia(wctx, *p), p.Text)
	}
	if p.Attempted {
		// An earlier attempt may have been accepted without us hearing the answer.
		r, err := b.findOwnReply(gctx, *p)
		if stoppedWaiting(ctx, err) {
			return errAbandoned
		}
		if err != nil {
			return errors.Join(err, j.Save(wctx))
		}
		if r != "" {
			p.ReplyUUID = r
			if err := j.Save(wctx); err != nil {
				return err
			}
			return b.replyDone(wctx, *p, r)
		}
	} else {
		p.Attempted, p.AttemptedAt = true, b.now()
	}
	if err := j.Save(wctx); err != nil {
		return err
	}
	r, err := b.guance.CreateReply(gctx, p.IssueUUID, p.Content)
	if stoppedWaiting(ctx, err) {
		return errAbandoned // not sent; the next attempt looks for it first all the same
	}
	if err != nil {
		var ge *guance.Error
		answered := errors.As(err, &ge)
		if answered && !ge.Temporary() && !errors.Is(err, guance.ErrBadKey) {
			// Guance said no for a reason a retry will not change.
			b.metrics.replyFailures.Inc()
			notice := noticeRefused
			if errors.Is(err, guance.ErrNotFound) {
				notice = noticeNoIssue
			}
			b.notify(wctx, p.MessageID, p.ChatID, notice)
			return jobs.Drop("refused by Guance", fmt.Errorf("reply to issue %s: %w", p.IssueUUID, err))
		}
		if answered && ge.StatusCode < 500 {
			// A throttle or a refused key: Guance did not create the reply. (A refused
			// key waits for someone to fix GUANCE_API_KEY; the reply is kept until then.)
			p.Attempted, p.AttemptedAt = false, time.Time{}
			if serr := j.Save(wctx); serr != nil {
				return errors.Join(err, serr)
			}
		}
		return fmt.Errorf("reply to issue %s: %w", p.IssueUUID, err)
	}
	if b.afterReply != nil {
		if err := b.afterReply(p.MessageID); err != nil {
			return errAbandoned
		}
	}
	b.learnKey(wctx, r.Creator)
	// Kept before anything else is recorded: once the reply is marked the bot's own,
	// findOwnReply would no longer find it, and a retry would post it again.
	p.ReplyUUID = r.UUID
	if err := j.Save(wctx); err != nil {
		return err
	}
	return b.replyDone(wctx, *p, r.UUID)
}

// replyDone records a posted reply and reacts to the chat message.
func (b *Bot) replyDone(ctx context.Context, p replyJob, replyUUID string) error {
	if replyUUID != "" {
		if err := b.state.AddOwnReply(ctx, p.IssueUUID, replyUUID); err != nil {
			return fmt.Errorf("record own reply %s: %w", replyUUID, err)
		}
	}
	if err := b.countSynced(ctx, p.IssueUUID, "chat:"+p.MessageID); err != nil {
		b.logger.Warn("count a synced reply on the card", "issue_uuid", p.IssueUUID, "err", err)
	}
	if err := b.mirror(ctx, p, replyUUID); err != nil {
		return err
	}
	if err := b.feishu.AddReaction(ctx, p.MessageID, "DONE"); err != nil {
		b.logger.Warn("react to a synced message", "message_id", p.MessageID, "err", err)
	}
	b.metrics.repliesToGuance.Inc()
	b.metrics.replyLatency.Observe(max(b.now().Sub(p.Received), 0).Seconds())
	b.logger.Info("chat message posted to Guance", "issue_uuid", p.IssueUUID, "message_id", p.MessageID, "reply_uuid", replyUUID)
	return nil
}

// mirror queues a reply written in one chat's thread for the threads of the issue's
// other chats, so that every chat sees the whole conversation. The thread queue keeps
// it in order with the issue's Guance replies.
func (b *Bot) mirror(ctx context.Context, p replyJob, replyUUID string) error {
	rec, err := b.state.GetIssue(ctx, p.IssueUUID)
	if errors.Is(err, store.ErrNotFound) || replyUUID == "" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read issue record: %w", err)
	}
	others := false
	for _, c := range rec.Cards {
		others = others || c.ChatID != p.ChatID
	}
	if !others {
		return nil
	}
	now := b.now()
	job := threadJob{
		IssueUUID: p.IssueUUID, ReplyUUID: replyUUID, Author: cmp.Or(p.SenderName, p.SenderOpenID, "?"),
		CreateAt: p.Received.Unix(), Text: p.Text, Seq: now.UnixNano(), FromChat: p.ChatID, FromName: b.chatName(ctx, p.ChatID),
	}
	if err := b.thread.Enqueue(ctx, "mirror:"+replyUUID, job, now); err != nil {
		return fmt.Errorf("queue reply %s for the other chats: %w", replyUUID, err)
	}
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

// replyContent formats a reply as Guance shows it, within Guance's length limit; via
// names the group it came from ("" when the issue is in one chat only).
func replyContent(author, via, text string) string {
	from := "[飞书]"
	if via != "" {
		from = "[飞书 · " + via + "]"
	}
	s := from + " " + author + ": " + text
	return plaintext.Truncate(s, guance.MaxReplyRunes, "\n…（已截断 / truncated）")
}

// replyVia names the group a reply came from when its issue has cards in several
// chats, and "" otherwise.
func (b *Bot) replyVia(ctx context.Context, p replyJob) string {
	rec, err := b.state.GetIssue(ctx, p.IssueUUID)
	if err != nil || len(rec.Cards) < 2 || rec.Card(p.ChatID) == nil {
		return ""
	}
	return b.chatName(ctx, p.ChatID)
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
	action := map[commandKind]string{cmdResolve: cards.ActionResolve, cmdPending: cards.ActionPending, cmdReopen: cards.ActionReopen}[kind]
	first, err := b.state.Claim(ctx, "msg:"+m.MessageID, messageDedupeTTL)
	if err != nil {
		return fmt.Errorf("claim message %s: %w", m.MessageID, err)
	}
	if !first {
		return nil
	}
	job := statusJob{
		IssueUUID: rec.IssueUUID, Target: cards.Action{Action: action}.Status(), Action: action,
		WhoOpenID: m.SenderOpenID, MessageID: m.MessageID, ChatID: m.ChatID, At: b.now(),
	}
	if err := b.queueStatusJob(ctx, "msg:"+m.MessageID, job); err != nil {
		_ = b.state.Release(context.WithoutCancel(ctx), "msg:"+m.MessageID)
		return err
	}
	b.logger.Info("status command queued", "issue_uuid", rec.IssueUUID, "message_id", m.MessageID, "action", action)
	return nil
}
