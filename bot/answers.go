package bot

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"issuebot/bot/cards"
	"issuebot/bot/jobs"
)

// notice is a short bilingual message the bot posts into a thread. Plain text messages
// cannot carry per-reader languages, so both are shown, Chinese first.
type notice struct {
	kind   string // names the notice in the idempotency key
	zh, en string
}

func (n notice) text() string { return n.zh + "\n" + n.en }

var (
	noticeRefused = notice{"refused",
		"⚠️ Guance 拒绝了这条回复，未同步。",
		"⚠️ Guance refused this reply; it was not synced."}
	noticeNoIssue = notice{"no-issue",
		"⚠️ 找不到对应的 Guance Issue（可能已被删除），这条回复未同步。",
		"⚠️ The Guance issue no longer exists (deleted?); this reply was not synced."}
	noticeDelayed = notice{"delayed",
		"⏳ Guance 暂时不可用，这条回复会在恢复后自动同步。",
		"⏳ Guance is unavailable right now; this reply will be synced once it recovers."}
	noticeNotInThread = notice{"not-in-thread",
		"请在 Issue 卡片的话题里使用 resolve / pending / reopen。",
		"Use resolve / pending / reopen inside an issue card's thread."}
	noticeStatusRefused = notice{"status-refused",
		"⚠️ Guance 拒绝了状态修改（权限不足？）。",
		"⚠️ Guance refused the status change (missing permission?)."}
	noticeCardPending = notice{"card-pending",
		"卡片还在发送中，请几秒后再发一次。",
		"The card is still being sent; please try again in a few seconds."}
	noticeNoIssueStatus = notice{"status-no-issue",
		"⚠️ 找不到对应的 Guance Issue（可能已被删除），状态未修改。",
		"⚠️ The Guance issue no longer exists (deleted?); the status was not changed."}
)

// notices finds a notice by its kind.
var notices = map[string]notice{}

func init() {
	for _, n := range []notice{noticeRefused, noticeNoIssue, noticeDelayed, noticeNotInThread, noticeStatusRefused, noticeNoIssueStatus, noticeCardPending} {
		notices[n.kind] = n
	}
}

// queueAnswers holds the bot's answers to people: the help card, the status report and
// notices about their messages. They are durable, paced with everything else the bot
// posts into a chat (Feishu allows 5 messages a second per group, shared by every bot
// in it), and retried like any job, so a throttled chat or a restart loses none.
const queueAnswers = "answers"

// Answer kinds besides the notices'.
const (
	answerHelp    = "help"
	answerStatus  = "status"
	answerList    = "list"
	answerBind    = "bind"
	answerUnbind  = "unbind"
	answerWelcome = "welcome" // the card posted when the bot is added to a group
	answerGoodbye = "goodbye" // not a post: forgets a group the bot left
)

// answerJob is an answer on its way to a chat. Its id is the answer's Feishu uuid, so
// one message gets each answer once.
type answerJob struct {
	MessageID string `json:"message_id"` // the message answered; "" for a post into the chat
	ChatID    string `json:"chat_id,omitempty"`
	Kind      string `json:"kind"` // one of the answer kinds above or a notice's kind
	// Key names an answer that answers no message (a welcome: the event's id).
	Key string `json:"key,omitempty"`
	// Args are a command's arguments (bind, unbind), and SenderOpenID who sent it.
	Args         string `json:"args,omitempty"`
	SenderOpenID string `json:"sender_open_id,omitempty"`
	// Direct is set for a command sent in a direct chat with the bot.
	Direct bool `json:"direct,omitempty"`
	// Done is the answer of a command that changed something (bind, unbind), kept once
	// it is carried out, so that a retried post does not do it again.
	Done string `json:"done,omitempty"`
}

// queueAnswer queues an answer.
func (b *Bot) queueAnswer(ctx context.Context, a answerJob) error {
	id := feedbackUUID(cmp.Or(a.MessageID, a.Key), a.Kind)
	if err := b.answers.Enqueue(ctx, id, a, b.now()); err != nil {
		return fmt.Errorf("queue the %s answer in chat %s: %w", a.Kind, a.ChatID, err)
	}
	return nil
}

// notify queues a notice about a message (in its thread); a failure to queue it is
// logged, since the work it reports on is done either way.
func (b *Bot) notify(ctx context.Context, messageID, chatID string, n notice) {
	if err := b.queueAnswer(ctx, answerJob{MessageID: messageID, ChatID: chatID, Kind: n.kind}); err != nil {
		b.logger.Warn("queue a notice", "message_id", messageID, "notice", n.kind, "err", err)
	}
}

// sendAnswer posts one queued answer as a reply to its message (or into its chat).
// Nothing is posted into a chat the bot left.
func (b *Bot) sendAnswer(ctx context.Context, j *jobs.Job[answerJob]) error {
	p := j.Payload
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if p.ChatID != "" {
		left, err := b.chatLeft(wctx, p.ChatID)
		if err != nil {
			return err
		}
		if p.Kind == answerGoodbye {
			if !left {
				return nil // back in the chat since
			}
			return b.forgetChat(wctx, p.ChatID)
		}
		if left {
			return nil
		}
		if !b.pacer.wait(ctx, p.ChatID) {
			return errAbandoned
		}
	}
	var err error
	switch p.Kind {
	case answerHelp:
		_, err = b.feishu.ReplyCard(wctx, p.MessageID, cards.Help(), false, j.ID)
	case answerWelcome:
		_, err = b.feishu.SendCard(wctx, p.ChatID, cards.Welcome(), j.ID)
	case answerStatus:
		var text string
		if text, err = b.statusText(wctx, p); err == nil {
			_, err = b.feishu.ReplyText(wctx, p.MessageID, text, false, j.ID)
		}
	case answerList:
		var card []byte
		if card, err = b.listCard(wctx, p); err == nil {
			_, err = b.feishu.ReplyCard(wctx, p.MessageID, card, false, j.ID)
		}
	case answerBind, answerUnbind:
		if p.Done == "" {
			if p.Done, err = b.routeCommand(wctx, p); err != nil {
				if _, reason := b.classify(ctx, err, j.Attempts+1); reason != jobs.ReasonRefused {
					break // retried
				}
				b.logger.Warn("a route command could not be carried out", "chat_id", p.ChatID, "err", err)
				p.Done, err = "⚠️ 暂时无法完成（Guance 或飞书拒绝了请求），路由未改变。\n⚠️ This could not be done (Guance or Feishu refused a request); the routes were not changed.", nil
			}
			j.Payload.Done = p.Done
			if err := j.Save(wctx); err != nil {
				return err
			}
		}
		_, err = b.feishu.ReplyText(wctx, p.MessageID, p.Done, false, j.ID)
	default:
		n, ok := notices[p.Kind]
		if !ok {
			return jobs.Drop("unknown answer", fmt.Errorf("answer kind %q", p.Kind))
		}
		_, err = b.feishu.ReplyText(wctx, p.MessageID, n.text(), true, j.ID)
	}
	if err != nil {
		err = fmt.Errorf("post the %s answer to message %s: %w", p.Kind, p.MessageID, err)
		// An answer Feishu refuses (the message was recalled, say) or that could not be
		// posted for a long while is not worth holding up the chat's later answers. (The
		// queue's ctx, not the call's, which may have timed out: that is worth a retry.)
		if _, reason := b.classify(ctx, err, j.Attempts+1); reason == jobs.ReasonRefused || j.Attempts+1 >= answerMaxAttempts {
			return jobs.Drop("cannot be posted", err)
		}
		return err
	}
	b.metrics.commands.WithLabelValues(p.Kind).Inc()
	return nil
}

// statusText is the status report and this chat's routes.
func (b *Bot) statusText(ctx context.Context, p answerJob) (string, error) {
	r, rerr := b.report(ctx)
	text := r.Text(b.now())
	if rerr != nil {
		b.logger.Warn("status report incomplete", "err", rerr)
		text += "\n⚠️ 存储不可用 / the store is unreachable"
	}
	chat := p.ChatID
	if p.Direct {
		chat = b.cfg.ChatID
	}
	routes, err := b.routesText(ctx, chat)
	if err != nil {
		return "", err
	}
	return text + "\n" + routes, nil
}

// answerMaxAttempts bounds the tries of one answer (about an hour of backoff).
const answerMaxAttempts = 30
