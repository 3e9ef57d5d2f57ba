package cards

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"issuebot/guance"
)

// DigestItem is one issue of a storm digest.
type DigestItem struct {
	Issue     guance.Issue
	LevelName string
	// Carded is set once the issue's own card was posted.
	Carded bool
}

// DigestData is what a storm digest shows.
type DigestData struct {
	// Items are the digest's issues, newest first.
	Items []DigestItem
	Since time.Time
	// Ended is when the storm ended (zero while it goes on).
	Ended    time.Time
	Location *time.Location
}

// DigestTitles is how many of the newest issues a digest names.
const DigestTitles = 10

// Digest renders a storm's digest: counts by level and status, the newest titles (each
// with a button that posts its own card), and the total. The
// header takes the colour of the highest level in it; an ended storm says how many
// issues it had and how long it lasted.
func Digest(d DigestData) ([]byte, error) {
	loc := d.Location
	if loc == nil {
		loc = time.Local
	}
	levels := map[string]int{}
	statuses := map[guance.StatusType]int{}
	top := 3
	for _, it := range d.Items {
		lz, _ := LevelDisplay(it.Issue.Level, it.LevelName)
		levels[lz]++
		statuses[it.Issue.StatusType]++
		top = min(top, digestRank(it.Issue.Level))
	}
	var lvl []string
	for _, name := range []string{"P0", "P1", "P2", "P3", "未知"} {
		if n := levels[name]; n > 0 {
			lvl = append(lvl, fmt.Sprintf("%s × %d", name, n))
			delete(levels, name)
		}
	}
	for name, n := range levels {
		lvl = append(lvl, fmt.Sprintf("%s × %d", cardMD(name), n))
	}
	var stZH, stEN []string
	for _, s := range []guance.StatusType{guance.StatusOpen, guance.StatusWorking, guance.StatusPending, guance.StatusResolved, guance.StatusClosed} {
		if n := statuses[s]; n > 0 {
			zh, en := StatusText(s)
			stZH = append(stZH, fmt.Sprintf("%s %d", zh, n))
			stEN = append(stEN, fmt.Sprintf("%s %d", en, n))
		}
	}
	total := len(d.Items)
	since := d.Since.In(loc).Format("15:04:05")
	var zh, en string
	if d.Ended.IsZero() {
		zh = fmt.Sprintf("告警风暴：自 %s 起共 **%d** 个新 Issue 合并在这张卡片里，风暴结束后恢复单独的卡片。", since, total)
		en = fmt.Sprintf("Issue storm: **%d** new issues since %s are gathered in this card; single cards resume when it is over.", total, since)
	} else {
		dur := d.Ended.Sub(d.Since).Round(time.Second)
		zh = fmt.Sprintf("风暴已结束：%d 个 Issue，持续 %s。之后的 Issue 重新单独发卡片。", total, dur)
		en = fmt.Sprintf("The storm is over: %d issues in %s. Later issues get their own cards again.", total, dur)
	}
	zh += "\n级别：" + strings.Join(lvl, " · ") + "\n状态：" + strings.Join(stZH, " · ")
	en += "\nLevels: " + strings.Join(lvl, " · ") + "\nStatus: " + strings.Join(stEN, " · ")
	elements := []any{bilingualMD(zh, en)}
	for i, it := range d.Items {
		if i == DigestTitles {
			elements = append(elements, bilingualMD(fmt.Sprintf("…… 另有 %d 个，见 `@机器人 list`", total-i),
				fmt.Sprintf("… and %d more: see `@bot list`", total-i)))
			break
		}
		lz, le := LevelDisplay(it.Issue.Level, it.LevelName)
		title := cardMD(cardLine(it.Issue.Name, 80))
		row := map[string]any{"tag": "column_set", "flex_mode": "none", "columns": []any{
			map[string]any{"tag": "column", "width": "weighted", "weight": 4, "elements": []any{
				bilingualMD("**"+lz+"** "+title, "**"+le+"** "+title)}},
		}}
		if !it.Carded {
			btn := map[string]any{"tag": "button", "text": cardPlain("卡片", "Card"), "type": "default",
				"behaviors": []any{map[string]any{"type": "callback", "value": map[string]any{"action": ActionCard, "issue": it.Issue.UUID}}}}
			row["columns"] = append(row["columns"].([]any), map[string]any{"tag": "column", "width": "auto",
				"elements": []any{btn}})
		}
		elements = append(elements, row)
	}
	template := []string{"red", "orange", "yellow", "grey"}[top]
	if !d.Ended.IsZero() {
		template = "green"
	}
	b := simpleCard(fmt.Sprintf("Issue storm: %d issues", total), fmt.Sprintf("告警风暴：%d 个 Issue", total), template, elements)
	if !json.Valid(b) {
		return nil, fmt.Errorf("render digest: invalid JSON")
	}
	return b, nil
}

// digestRank ranks a level: 0 (P0) to 3 (P3, unknown or custom).
func digestRank(l guance.LevelRef) int {
	switch l {
	case "system_level_0":
		return 0
	case "system_level_1":
		return 1
	case "system_level_2":
		return 2
	}
	return 3
}
