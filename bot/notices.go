package bot

import (
	"context"
	"encoding/json"
	"time"

	"issuebot/bot/feishu"
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
	noticeNoIssueStatus = notice{"status-no-issue",
		"⚠️ 找不到对应的 Guance Issue（可能已被删除），状态未修改。",
		"⚠️ The Guance issue no longer exists (deleted?); the status was not changed."}
)

// notify replies to a chat message with a notice, in its thread. It is idempotent per
// message and notice, so a retry never posts it twice.
func (b *Bot) notify(ctx context.Context, messageID string, n notice) {
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.feishu.ReplyText(nctx, messageID, n.text(), true, feedbackUUID(messageID, n.kind)); err != nil {
		b.logger.Warn("post a notice in the chat", "message_id", messageID, "notice", n.kind, "err", err)
	}
}

// sendNotice answers a message with a notice (used from background work).
func (b *Bot) sendNotice(m feishu.Message, n notice) {
	b.notify(context.Background(), m.MessageID, n)
}

// sendHelp answers a message with the help card.
func (b *Bot) sendHelp(m feishu.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.feishu.ReplyCard(ctx, m.MessageID, helpCard(), false, feedbackUUID(m.MessageID, "help")); err != nil {
		b.logger.Warn("post the help card", "message_id", m.MessageID, "err", err)
	}
}

// helpCard is the bilingual help card (JSON 2.0).
func helpCard() []byte {
	const zh = "**在卡片的话题里回复：** 内容会同步为 Guance Issue 的回复（带上你的名字）；同步成功后消息上会出现 ✅。\n" +
		"以 `//` 开头的消息不会同步（私下备注）。\n" +
		"Guance 中的回复和状态变化会回到话题和卡片里。\n\n" +
		"**命令（@机器人）：**\n" +
		"- `help`：显示本帮助\n" +
		"- `status`：桥接状态（上次轮询、Guance 配额、同步延迟）\n" +
		"- 在卡片话题里：`resolve` / `pending` / `reopen` 修改状态（与卡片按钮相同）\n" +
		"- `#issue_xxx#内容`：把内容回复到指定 Issue（兼容旧用法）"
	const en = "**Reply in a card's thread** and your message becomes a reply on the Guance issue, with your name; " +
		"a ✅ reaction shows it was synced.\n" +
		"Messages starting with `//` stay in the chat (private remarks).\n" +
		"Replies and status changes made in Guance come back to the thread and the card.\n\n" +
		"**Commands** (@ the bot):\n" +
		"- `help`: show this help\n" +
		"- `status`: bridge health (last poll, Guance budget, sync delay)\n" +
		"- in a card's thread: `resolve` / `pending` / `reopen` change the status (like the card's buttons)\n" +
		"- `#issue_xxx#text`: post text to that issue (the old form)"
	card := map[string]any{
		"schema": "2.0",
		"config": map[string]any{"update_multi": true},
		"header": map[string]any{
			"title": map[string]any{"tag": "plain_text", "content": "issuebot help",
				"i18n_content": map[string]string{"zh_cn": "issuebot 使用帮助", "en_us": "issuebot help"}},
			"template": "blue",
		},
		"body": map[string]any{"elements": []any{
			map[string]any{"tag": "markdown", "content": en, "i18n_content": map[string]string{"zh_cn": zh, "en_us": en}},
		}},
	}
	b, _ := json.Marshal(card)
	return b
}

// background runs fn outside the event handler, bounded, and Run waits for it on
// shutdown. When too much is already running, fn is dropped with a log line.
func (b *Bot) background(fn func()) {
	select {
	case b.bgSlots <- struct{}{}:
	default:
		b.logger.Warn("too many background answers in flight; dropping one")
		return
	}
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		defer func() { <-b.bgSlots }()
		fn()
	}()
}
