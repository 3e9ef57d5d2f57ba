package cards

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"issuebot/guance"
)

// Welcome is the bilingual card the bot posts when it is added to a group: what it
// does and how to bind the group to Guance channels.
func Welcome() []byte {
	const zh = "我会把 Guance 异常追踪的 Issue 发到群里，每个 Issue 一张实时卡片。卡片的话题就是 Issue 的讨论，" +
		"两边的回复互相同步，按钮可以修改状态。\n\n" +
		"**绑定本群：** `@机器人 bind <频道名> [P0|P1|P2|P3]`，该频道在此级别及以上的新 Issue 会发到本群" +
		"（`bind default` 接收全部）。\n" +
		"`@机器人 bind` 查看本群路由，`@机器人 unbind <频道>` 解除，`@机器人 list` 查看未解决的 Issue，`@机器人 help` 查看帮助。"
	const en = "I bring Guance issues into this group, each as a live card. The card's thread is the issue's " +
		"conversation, synced both ways, and its buttons change the status.\n\n" +
		"**Bind this group:** `@bot bind <channel> [P0|P1|P2|P3]` sends the channel's new issues at that level or " +
		"above here (`bind default` takes every issue).\n" +
		"`@bot bind` shows this group's routes, `@bot unbind <channel>` removes one, `@bot list` shows open issues, " +
		"`@bot help` shows help."
	return simpleCard("Hello from issuebot", "issuebot 已加入本群", "wathet", []any{bilingualMD(zh, en)})
}

// ListItem is one issue in a chat's list.
type ListItem struct {
	Issue guance.Issue
	// LevelName is the level's display name ("" for the system name).
	LevelName string
	// CardAt is when the issue's card was posted in this chat.
	CardAt time.Time
}

// ListData is what the list card shows.
type ListData struct {
	Items []ListItem
	// Total is how many open issues there are, shown when more than the items.
	Total      int
	Now        time.Time
	ConsoleURL string
	Location   *time.Location
}

// ListMax bounds the issues one list card shows (the card stays well under 30 KB).
const ListMax = 30

// listMaxBytes keeps a list card under Feishu's 30 KB card limit with room to spare.
const listMaxBytes = 26 * 1024

// List renders a chat's open issues: level, title (a link to the issue in Guance),
// age, status, and when its card was posted here. It shows as many of d.Items as fit
// in a card (at most ListMax) and counts the rest.
func List(d ListData) ([]byte, error) {
	n := min(len(d.Items), ListMax)
	for {
		b := list(d, n)
		if len(b) <= listMaxBytes || n <= 1 {
			return b, nil
		}
		n--
	}
}

// list renders the first n items of d.
func list(d ListData, n int) []byte {
	loc := d.Location
	if loc == nil {
		loc = time.Local
	}
	var zh, en []string
	for _, it := range d.Items[:n] {
		is := it.Issue
		lz, le := LevelDisplay(is.Level, it.LevelName)
		sz, se := StatusText(is.StatusType)
		title := cardMD(cardLine(is.Name, TitleRunes))
		if u := listIssueURL(d.ConsoleURL, is); u != "" {
			title = "[" + title + "](" + u + ")"
		}
		age := listAge(d.Now.Sub(is.CreateAt.Time()))
		card := it.CardAt.In(loc).Format("01-02 15:04")
		zh = append(zh, fmt.Sprintf("- **%s** %s · %s · 已 %s · 卡片 %s", lz, title, sz, age, card))
		en = append(en, fmt.Sprintf("- **%s** %s · %s · %s old · card %s", le, title, se, age, card))
	}
	total := max(d.Total, len(d.Items))
	if len(zh) == 0 {
		zh, en = []string{"没有未解决的 Issue。"}, []string{"No open issues."}
	} else if total > len(zh) {
		zh = append(zh, fmt.Sprintf("…… 另有 %d 个", total-len(zh)))
		en = append(en, fmt.Sprintf("… and %d more", total-len(en)))
	}
	return simpleCard(fmt.Sprintf("Open issues (%d)", total), fmt.Sprintf("未解决的 Issue（%d）", total), "blue",
		[]any{bilingualMD(strings.Join(zh, "\n"), strings.Join(en, "\n"))})
}

// listIssueURL is an issue's page in the console, as the issue card links it.
func listIssueURL(console string, is guance.Issue) string {
	base := strings.TrimRight(strings.TrimSpace(console), "/")
	if !cardIsHTTP(base) {
		return ""
	}
	q := "leftActiveKey=ExceptionsTracking&activeName=ExceptionsTracking" +
		"&w=" + url.QueryEscape(is.WorkspaceUUID) +
		"&classic=exceptions_tracing&issueName=SYS&sourceType=exceptions_tracing" +
		"&__docid=" + url.QueryEscape(is.UUID)
	return cardSafeURL(base + "/exceptions/exceptionsTracking?" + q)
}

// listAge is an issue's age for people: minutes, hours or days.
func listAge(d time.Duration) string {
	switch {
	case d < time.Hour:
		return fmt.Sprintf("%dm", max(int(d/time.Minute), 0))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// bilingualMD is a markdown element in both languages.
func bilingualMD(zh, en string) map[string]any {
	return map[string]any{"tag": "markdown", "content": en, "i18n_content": map[string]string{"zh_cn": zh, "en_us": en}}
}

// simpleCard is a JSON 2.0 card with a bilingual title and the given elements.
func simpleCard(en, zh, template string, elements []any) []byte {
	card := map[string]any{
		"schema": "2.0",
		"config": map[string]any{"update_multi": true,
			"summary": map[string]any{"content": en, "i18n_content": map[string]string{"zh_cn": zh, "en_us": en}}},
		"header": map[string]any{
			"title":    map[string]any{"tag": "plain_text", "content": en, "i18n_content": map[string]string{"zh_cn": zh, "en_us": en}},
			"template": template,
		},
		"body": map[string]any{"elements": elements},
	}
	b, _ := json.Marshal(card)
	return b
}
