package cards

// Help is the bilingual help card (JSON 2.0).
func Help() []byte {
	const zh = "**在卡片的话题里回复：** 内容会同步为 Guance Issue 的回复（带上你的名字）；同步成功后消息上会出现 ✅。\n" +
		"以 `//` 开头的消息不会同步（私下备注）。\n" +
		"Guance 中的回复和状态变化会回到话题和卡片里。\n\n" +
		"**命令（@机器人）：**\n" +
		"- `help`：显示本帮助\n" +
		"- `status`：桥接状态（上次轮询、Guance 配额、同步延迟）和本群路由\n" +
		"- `list`：本群未解决的 Issue\n" +
		"- `bind <频道> [P0|P1|P2|P3]`：把频道在此级别及以上的 Issue 发到本群；`bind` 查看路由；`unbind [频道]` 解除\n" +
		"- 在卡片话题里：`resolve` / `pending` / `reopen` 修改状态（与卡片按钮相同）\n" +
		"- `#issue_xxx#内容`：把内容回复到指定 Issue（兼容旧用法）"
	const en = "**Reply in a card's thread** and your message becomes a reply on the Guance issue, with your name; " +
		"a ✅ reaction shows it was synced.\n" +
		"Messages starting with `//` stay in the chat (private remarks).\n" +
		"Replies and status changes made in Guance come back to the thread and the card.\n\n" +
		"**Commands** (@ the bot):\n" +
		"- `help`: show this help\n" +
		"- `status`: bridge health (last poll, Guance budget, sync delay) and this group's routes\n" +
		"- `list`: this group's open issues\n" +
		"- `bind <channel> [P0|P1|P2|P3]`: send that channel's issues at that level or above here; `bind` shows the routes; `unbind [channel]` removes them\n" +
		"- in a card's thread: `resolve` / `pending` / `reopen` change the status (like the card's buttons)\n" +
		"- `#issue_xxx#text`: post text to that issue (the old form)"
	return simpleCard("issuebot help", "issuebot 使用帮助", "blue", []any{bilingualMD(zh, en)})
}
