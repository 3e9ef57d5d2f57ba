package cards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"issuebot/guance"
)

func cardPretty(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func TestWelcomeCard(t *testing.T) {
	b := Welcome()
	cardCheck(t, b)
	cardGolden(t, "welcome.golden.json", cardPretty(t, b))
	if !strings.Contains(string(b), "bind") || !strings.Contains(string(b), "绑定") {
		t.Error("the welcome card does not say how to bind")
	}
}

func TestListCard(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, cardCST)
	items := []ListItem{
		{Issue: guance.Issue{UUID: "issue_a", Name: "DB *latency* [x](y)", Level: "system_level_0", StatusType: guance.StatusOpen,
			WorkspaceUUID: "wksp_1", CreateAt: guance.Time(now.Add(-90 * time.Minute).Unix())}, CardAt: now.Add(-89 * time.Minute)},
		{Issue: guance.Issue{UUID: "issue_b", Name: "queue backlog", Level: "issl_custom", StatusType: guance.StatusPending,
			CreateAt: guance.Time(now.Add(-72 * time.Hour).Unix())}, LevelName: "重要", CardAt: now.Add(-72 * time.Hour)},
	}
	b, err := List(ListData{Items: items, Total: 2, Now: now, ConsoleURL: cardConsole, Location: cardCST})
	if err != nil {
		t.Fatal(err)
	}
	cardCheck(t, b)
	cardGolden(t, "list.golden.json", cardPretty(t, b))
	if strings.Contains(string(b), "*latency*") || strings.Contains(string(b), "[x](y)") {
		t.Error("a title's markdown reached the list card unescaped")
	}
	empty, _ := List(ListData{Now: now})
	if !strings.Contains(string(empty), "No open issues") {
		t.Errorf("empty list = %s", empty)
	}
}

func TestDigestCard(t *testing.T) {
	since := time.Date(2026, 12, 1, 12, 0, 0, 0, cardCST)
	var items []DigestItem
	for i := range 12 {
		lvl := guance.LevelRef(fmt.Sprintf("system_level_%d", 1+i%3))
		st := guance.StatusOpen
		if i%4 == 0 {
			st = guance.StatusResolved
		}
		items = append(items, DigestItem{Issue: guance.Issue{UUID: fmt.Sprintf("issue_%02d", i), Name: fmt.Sprintf("disk full on node-%d", i),
			Level: lvl, StatusType: st}, Carded: i == 1})
	}
	b, err := Digest(DigestData{Items: items, Since: since, Location: cardCST})
	if err != nil {
		t.Fatal(err)
	}
	m := cardCheck(t, b)
	cardGolden(t, "digest.golden.json", cardPretty(t, b))
	if got := m["header"].(map[string]any)["template"]; got != "orange" {
		t.Errorf("header template = %v, want orange (P1 is the highest level)", got)
	}
	if n := strings.Count(string(b), `"action":"card"`); n != DigestTitles-1 {
		t.Errorf("%d card buttons, want %d (one per title not carded yet)", n, DigestTitles-1)
	}
	if !strings.Contains(string(b), "12") || !strings.Contains(string(b), "and 2 more") {
		t.Error("the digest does not give the total and the rest")
	}
	ended, err := Digest(DigestData{Items: items, Since: since, Ended: since.Add(7 * time.Minute), Location: cardCST})
	if err != nil {
		t.Fatal(err)
	}
	cardCheck(t, ended)
	cardGolden(t, "digest_ended.golden.json", cardPretty(t, ended))
	if !strings.Contains(string(ended), "storm is over") || !strings.Contains(string(ended), "7m0s") {
		t.Errorf("ended digest = %s", ended)
	}
}

func TestParseDigestCardAction(t *testing.T) {
	a, err := ParseAction(map[string]any{"action": "card", "issue": "issue_1"})
	if err != nil || a.Action != ActionCard || a.IssueUUID != "issue_1" {
		t.Errorf("ParseAction(card) = %+v, %v", a, err)
	}
}

// TestListCardFitsFeishusLimit: real-length ids, console links and long Chinese titles
// still make a card under Feishu's 30 KB, the rest counted.
func TestListCardFitsFeishusLimit(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, cardCST)
	var items []ListItem
	for i := range 40 {
		items = append(items, ListItem{Issue: guance.Issue{
			UUID: fmt.Sprintf("issue_%032x", i), WorkspaceUUID: "wksp_0123456789abcdef0123456789abcdef",
			Name:  strings.Repeat("数据库主从复制延迟超过阈值", 6),
			Level: "system_level_1", StatusType: guance.StatusOpen, CreateAt: guance.Time(now.Unix()),
		}, CardAt: now})
	}
	b, err := List(ListData{Items: items, Total: 40, Now: now, ConsoleURL: "https://console.guance.com", Location: cardCST})
	if err != nil {
		t.Fatal(err)
	}
	cardCheck(t, b)
	if len(b) > 28*1024 {
		t.Errorf("list card is %d bytes, over Feishu's limit", len(b))
	}
	if !strings.Contains(string(b), "more") || !strings.Contains(string(b), "Open issues (40)") {
		t.Error("the list does not count the issues it could not show")
	}
}
