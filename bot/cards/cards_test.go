package cards

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"issuebot/guance"
)

var update = flag.Bool("update", false, "rewrite golden files")

// cardCST is the zone golden cards show times in (fixed, so no tzdata is needed).
var cardCST = time.FixedZone("CST", 8*3600)

const cardConsole = "https://console.guance.com"

// cardLoadIssue decodes an issue from testdata, as the guance client would.
func cardLoadIssue(t *testing.T, name string) guance.Issue {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return cardDecodeIssue(t, string(b))
}

func cardDecodeIssue(t *testing.T, s string) guance.Issue {
	t.Helper()
	var is guance.Issue
	if err := json.Unmarshal([]byte(s), &is); err != nil {
		t.Fatalf("decode issue: %v", err)
	}
	return is
}

// cardTestIssue is an open issue with a plain description.
func cardTestIssue() guance.Issue {
	return guance.Issue{
		UUID:          "issue_0123456789abcdef",
		Name:          "Disk full on db-1",
		Description:   "The disk is 98% full.",
		Level:         "system_level_1",
		StatusType:    guance.StatusOpen,
		ResourceType:  "checker",
		Creator:       "acnt_0123456789abcdef",
		CreatorInfo:   &guance.UserInfo{Name: "李四", Email: "lisi@example.com"},
		WorkspaceUUID: "wksp_0123456789abcdef",
		CreateAt:      guance.Time(1714113844),
	}
}

func TestRenderCardGolden(t *testing.T) {
	listRow := cardLoadIssue(t, "issue_list_row.json")
	get := cardLoadIssue(t, "issue_get.json")

	huge := cardTestIssue()
	huge.Name = "巨大的描述"
	var hb strings.Builder
	for i := 0; hb.Len() < 200<<10; i++ {
		hb.WriteString("<p>第 " + strings.Repeat("长", i%7+1) + " 行：磁盘使用率超过阈值 &amp; 持续上升 <b>bold</b></p>")
	}
	huge.Description = hb.String()

	emptyLevel := cardTestIssue()
	emptyLevel.Level = ""

	legacy := cardDecodeIssue(t, `{"uuid":"issue_legacy","name":"old row","level":0,"statusType":"10",
		"creator":"acnt_x","description":"plain\r\n\r\n\r\nlines","createAt":1690424627.5,
		"workspaceUUID":"wksp_x","extend":null}`)

	htmlOnly := cardTestIssue()
	htmlOnly.Level = "system_level_0"
	htmlOnly.Description = `<p>Line&nbsp;one &lt;tag&gt; &amp; &quot;q&quot; &#x4e2d;&#25991;</p>` +
		`<div><span>nested <span><b>bold</b> <i>and</i></span> spans</span><br>after br<br/>` +
		`<span data-at-embedded="" data-insert-by="@" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;acnt_1&quot;}}" contenteditable="false">&nbsp;<span class="key-word">@张三</span>&nbsp;</span>please look</div>` +
		`<ul><li>first</li><li>second</li></ul><p></p><p><br></p><p>last <a href="https://example.com/x">details</a></p>`

	resolved := cardTestIssue()
	resolved.StatusType = guance.StatusResolved
	resolved.Extend = guance.Extend{Text: "Fixed by restarting.", SourceLink: "/monitor/check?w=wksp_0123456789abcdef"}
	resolved.Resource = "db-1 disk monitor"

	pending := cardTestIssue()
	pending.StatusType = guance.StatusPending
	pending.Level = "system_level_2"

	custom := cardTestIssue()
	custom.Level = "issl_0a1b2c3d4e5f6789"

	inject := cardTestIssue()
	inject.Name = "[x](http://evil) **bold** <at id=all></at>\n# head"
	inject.CreatorInfo = &guance.UserInfo{Name: "*eve*_<at id=all></at>"}
	inject.Resource = "[click](javascript:alert(1)) `code` ~~s~~ $x$ a|b"
	inject.Extend.SourceLink = "/x?a=(b)&c=<d> e"
	inject.Description = "[x](http://evil) stays literal in plain_text"

	cases := []struct {
		name string
		d    Data
	}{
		{"list_row", Data{Issue: listRow, ChannelName: "default", Revision: 3, ConsoleURL: cardConsole, Location: cardCST}},
		{"get_shape", Data{Issue: get, ChannelName: "default", Revision: 1, ConsoleURL: cardConsole + "/", Location: cardCST, SyncedReplies: 1}},
		{"huge_description", Data{Issue: huge, ChannelName: "ops", Revision: 7, ConsoleURL: cardConsole, Location: cardCST}},
		{"empty_level", Data{Issue: emptyLevel, Revision: 1, ConsoleURL: cardConsole}},
		{"legacy_integer_level", Data{Issue: legacy, Revision: 1, ConsoleURL: cardConsole, Location: cardCST}},
		{"html_only", Data{Issue: htmlOnly, ChannelName: "default", Revision: 2, ConsoleURL: cardConsole, Location: cardCST}},
		{"resolved_last_change", Data{Issue: resolved, LevelName: "P1", ChannelName: "default", Revision: 9, ConsoleURL: cardConsole, Location: cardCST,
			LastChange: &Change{Who: "张三", Action: "resolve", At: time.Date(2024, 4, 26, 15, 4, 0, 0, cardCST)}, SyncedReplies: 12}},
		{"pending", Data{Issue: pending, LevelName: "P2", ChannelName: "default", Revision: 4, ConsoleURL: cardConsole, Location: cardCST,
			LastChange: &Change{Who: "Alice", Action: "pending", At: time.Date(2024, 4, 27, 9, 30, 0, 0, time.UTC)}}},
		{"custom_level", Data{Issue: custom, LevelName: "紧急-DB", LevelColor: "#FF7931", ChannelName: "db", Revision: 1, ConsoleURL: cardConsole, Location: cardCST}},
		{"buttons_expiring", Data{Issue: pending, LevelName: "P2", ChannelName: "default", Revision: 5, ConsoleURL: cardConsole, Location: cardCST,
			ButtonsUntil: time.Date(2024, 5, 10, 14, 44, 4, 0, cardCST)}},
		{"markdown_injection", Data{Issue: inject, LevelName: "**P1**", ChannelName: "default", Revision: 1, ConsoleURL: cardConsole, Location: cardCST,
			LastChange: &Change{Who: "[m](http://evil)", Action: "reopen", At: time.Date(2024, 4, 27, 9, 30, 0, 0, cardCST)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.d)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			cardCheck(t, got)
			again, _ := Render(tc.d)
			if !bytes.Equal(got, again) {
				t.Error("Render is not deterministic")
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			cardGolden(t, "card_"+tc.name+".golden.json", pretty.Bytes())
			t.Logf("%d bytes", len(got))
		})
	}
}

// cardGolden compares got with testdata/name, or rewrites it with -update.
func cardGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./bot/cards -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

// cardCheck asserts what holds for every card: valid JSON 2.0 below the size budget,
// only properties JSON 2.0 accepts, and every i18n_content in both languages.
func cardCheck(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %.200s", b)
	}
	if len(b) >= 28*1024 {
		t.Errorf("card is %d bytes, want < 28 KB", len(b))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["schema"] != "2.0" {
		t.Errorf("schema = %v, want 2.0", m["schema"])
	}
	for _, p := range cardValidate(m) {
		t.Error(p)
	}
	return m
}

// cardAllowed lists the properties of each kind of object the card may contain: the
// components the brief allows, nothing JSON 2.0 could reject with 230099.
var cardAllowed = map[string][]string{
	"card":       {"schema", "config", "header", "body"},
	"config":     {"update_multi", "summary"},
	"summary":    {"content", "i18n_content"},
	"header":     {"title", "subtitle", "template", "text_tag_list", "i18n_text_tag_list"},
	"plain_text": {"tag", "content", "i18n_content"},
	"text_tag":   {"tag", "text", "color"},
	"tag_text":   {"tag", "content"}, // a text_tag's text: multilingual only through i18n_text_tag_list
	"body":       {"elements"},
	"markdown":   {"tag", "content", "i18n_content"},
	"div":        {"tag", "text"},
	"hr":         {"tag"},
	"column_set": {"tag", "flex_mode", "columns"},
	"column":     {"tag", "width", "weight", "elements"},
	"button":     {"tag", "text", "type", "behaviors"},
	"callback":   {"type", "value"},
	"open_url":   {"type", "default_url"},
	"value":      {"action", "issue", "rev", "st"},
}

var (
	cardTemplates = []string{"blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine", "violet", "purple", "indigo", "grey", "default"}
	cardTagColors = []string{"neutral", "blue", "turquoise", "lime", "orange", "violet", "indigo", "wathet", "green", "yellow", "red", "purple", "carmine"}
)

// cardValidate walks a decoded card and returns its problems.
func cardValidate(m map[string]any) []string {
	var problems []string
	bad := func(msg string, args ...any) {
		problems = append(problems, strings.TrimSpace(msg+" "+fmt.Sprint(args...)))
	}
	var walk func(kind string, v any)
	obj := func(kind string, v any) map[string]any {
		o, ok := v.(map[string]any)
		if !ok {
			bad("not an object:", kind)
			return nil
		}
		for k := range o {
			if !slices.Contains(cardAllowed[kind], k) {
				bad("unexpected property:", kind, ".", k)
			}
		}
		if i18n, ok := o["i18n_content"]; ok {
			im, _ := i18n.(map[string]any)
			for _, lang := range []string{"zh_cn", "en_us"} {
				if s, _ := im[lang].(string); strings.TrimSpace(s) == "" {
					bad("i18n_content lacks a language:", kind, " ", lang)
				}
			}
			if len(im) != 2 {
				bad("i18n_content has other languages:", kind, " ", im)
			}
		}
		if c, ok := o["content"]; ok {
			if s, _ := c.(string); s == "" {
				bad("empty content:", kind)
			}
		}
		return o
	}
	text := func(v any) {
		if o := obj("plain_text", v); o != nil && o["tag"] != "plain_text" {
			bad("text tag is not plain_text", o["tag"])
		}
	}
	walk = func(kind string, v any) {
		o := obj(kind, v)
		if o == nil {
			return
		}
		switch kind {
		case "card":
			walk("config", o["config"])
			walk("header", o["header"])
			walk("body", o["body"])
		case "config":
			if o["update_multi"] != true {
				bad("update_multi is not true")
			}
			walk("summary", o["summary"])
		case "header":
			text(o["title"])
			if o["subtitle"] != nil {
				text(o["subtitle"])
			}
			if s, _ := o["template"].(string); !slices.Contains(cardTemplates, s) {
				bad("bad header template", s)
			}
			tagList := func(v any) {
				tags, _ := v.([]any)
				for _, tg := range tags {
					tm := obj("text_tag", tg)
					if tm == nil {
						continue
					}
					if tt := obj("tag_text", tm["text"]); tt != nil && tt["tag"] != "plain_text" {
						bad("text_tag text is not plain_text", tt["tag"])
					}
					if s, _ := tm["color"].(string); !slices.Contains(cardTagColors, s) {
						bad("bad text_tag color", s)
					}
				}
			}
			tagList(o["text_tag_list"])
			if o["text_tag_list"] != nil {
				i18n, _ := o["i18n_text_tag_list"].(map[string]any)
				for _, lang := range []string{"zh_cn", "en_us"} {
					if l, _ := i18n[lang].([]any); len(l) == 0 {
						bad("i18n_text_tag_list lacks a language:", lang)
					}
					tagList(i18n[lang])
				}
			}
		case "body":
			els, _ := o["elements"].([]any)
			for _, e := range els {
				cardWalkElement(e, walk, bad)
			}
		case "column_set":
			cols, _ := o["columns"].([]any)
			for _, c := range cols {
				cm := obj("column", c)
				els, _ := cm["elements"].([]any)
				for _, e := range els {
					cardWalkElement(e, walk, bad)
				}
			}
		case "markdown":
			for _, md := range []any{o["content"], o["i18n_content"].(map[string]any)["zh_cn"], o["i18n_content"].(map[string]any)["en_us"]} {
				if s, _ := md.(string); cardBoldProblem(s) != "" {
					bad("markdown bold:", cardBoldProblem(s))
				}
			}
		case "div":
			text(o["text"])
		case "button":
			text(o["text"])
			bs, _ := o["behaviors"].([]any)
			if len(bs) == 0 {
				bad("button without behaviors")
			}
			for _, b := range bs {
				bm, _ := b.(map[string]any)
				switch bm["type"] {
				case "callback":
					obj("callback", bm)
					vm := obj("value", bm["value"])
					if _, err := ParseAction(vm); err != nil {
						bad("button value does not parse", err.Error())
					}
				case "open_url":
					obj("open_url", bm)
					if u, _ := bm["default_url"].(string); !strings.HasPrefix(u, "https://") {
						bad("open_url is not https", u)
					}
				default:
					bad("unknown behavior", bm["type"])
				}
			}
		}
	}
	walk("card", m)
	return problems
}

// cardBoldProblem reports a bold run (**…**) without whitespace or a line's edge on
// both outer sides: Feishu may then print the asterisks, next to CJK punctuation
// above all. It returns "" when every run is safe.
func cardBoldProblem(s string) string {
	rs := []rune(s)
	open := false
	edge := func(i int) bool { return i < 0 || i >= len(rs) || unicode.IsSpace(rs[i]) }
	for i := 0; i+1 < len(rs); i++ {
		if rs[i] != '*' || rs[i+1] != '*' {
			continue
		}
		if !open && !edge(i-1) {
			return fmt.Sprintf("opening ** after %q in %q", rs[i-1], s)
		}
		if open && !edge(i+2) {
			return fmt.Sprintf("closing ** before %q in %q", rs[i+2], s)
		}
		open = !open
		i++
	}
	return ""
}

func cardWalkElement(e any, walk func(string, any), bad func(string, ...any)) {
	em, _ := e.(map[string]any)
	tag, _ := em["tag"].(string)
	if _, ok := cardAllowed[tag]; !ok || tag == "plain_text" {
		bad("unexpected element", tag)
		return
	}
	walk(tag, em)
}

func cardJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// cardElements returns the body elements of a rendered card.
func cardElements(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var c struct {
		Body struct {
			Elements []map[string]any `json:"elements"`
		} `json:"body"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Body.Elements
}

func TestRenderCardMarkdownInjection(t *testing.T) {
	is := cardTestIssue()
	is.Name = "[x](http://evil)"
	is.CreatorInfo = &guance.UserInfo{Name: "[y](http://evil) <at id=all></at> **b**"}
	is.Resource = "[z](http://evil)"
	is.Extend.SourceLink = "/ok) [w](http://evil"
	got, err := Render(Data{Issue: is, ConsoleURL: cardConsole, LevelName: "<at id=all></at>",
		LastChange: &Change{Who: "](http://evil)", Action: "resolve"}})
	if err != nil {
		t.Fatal(err)
	}
	cardCheck(t, got)
	for _, e := range cardElements(t, got) {
		if e["tag"] != "markdown" {
			continue
		}
		md := cardJSONString(e)
		// The URL may remain as text; it must not become a link or a mention.
		for _, bad := range []string{"(http://evil", "<at", "**b**", "[y]", "[z]", "[w]"} {
			if strings.Contains(md, bad) {
				t.Errorf("markdown contains %q: %s", bad, md)
			}
		}
	}
	// The title is plain text: shown as is.
	var c struct {
		Header struct {
			Title struct{ Content string } `json:"title"`
		} `json:"header"`
	}
	json.Unmarshal(got, &c)
	if c.Header.Title.Content != "[x](http://evil)" {
		t.Errorf("title = %q", c.Header.Title.Content)
	}
}

func TestRenderCardSize(t *testing.T) {
	big := func(unit string) string { return strings.Repeat(unit, (1<<20)/len(unit)+1) }
	cases := map[string]func(*guance.Issue){
		"ascii":       func(is *guance.Issue) { is.Description = big("a") },
		"quotes":      func(is *guance.Issue) { is.Description = big(`"\`) },
		"chinese":     func(is *guance.Issue) { is.Description = big("磁盘") },
		"emoji":       func(is *guance.Issue) { is.Description = big("👩‍👩‍👧") },
		"controls":    func(is *guance.Issue) { is.Description = big("\x01\x02x") },
		"html":        func(is *guance.Issue) { is.Description = big("<p>&lt;&amp;x</p>") },
		"extend_text": func(is *guance.Issue) { is.Extend.Text = big("<>&\u2028") },
		"invalid_utf8": func(is *guance.Issue) {
			is.Description = big("\xff\xfe")
		},
		"all_fields": func(is *guance.Issue) {
			is.Name = big("*")
			is.Description = big("长")
			is.Resource = big("[")
			is.ResourceType = big("(")
			is.CreatorInfo = &guance.UserInfo{Name: big("<")}
			is.Extend.SourceLink = "/" + big("(")
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			is := cardTestIssue()
			mod(&is)
			d := Data{Issue: is, ConsoleURL: cardConsole, ChannelName: strings.Repeat("频", 1000),
				LevelName: strings.Repeat("#", 1000), LastChange: &Change{Who: strings.Repeat("_", 5000), Action: "resolve"}}
			got, err := Render(d)
			if err != nil {
				t.Fatal(err)
			}
			cardCheck(t, got)
			t.Logf("%d bytes", len(got))
		})
	}
}

func TestRenderCardHugeDescriptionIsCut(t *testing.T) {
	is := cardTestIssue()
	is.Description = strings.Repeat("磁盘满了。", 200<<10/15)
	got, err := Render(Data{Issue: is})
	if err != nil {
		t.Fatal(err)
	}
	cardCheck(t, got)
	desc := cardElements(t, got)[2]["text"].(map[string]any)["content"].(string)
	if !strings.HasSuffix(desc, strings.TrimSpace(cardTruncated)) {
		t.Errorf("description does not end with the marker: %q", desc[len(desc)-80:])
	}
	if n := utf8.RuneCountInString(desc); n > DescRunes {
		t.Errorf("description has %d runes, want <= %d", n, DescRunes)
	}
}

func TestRenderCardButtons(t *testing.T) {
	tests := []struct {
		status guance.StatusType
		want   []string
	}{
		{guance.StatusOpen, []string{"resolve", "pending", "open_url"}},
		{guance.StatusWorking, []string{"resolve", "pending", "open_url"}},
		{guance.StatusResolved, []string{"pending", "reopen", "open_url"}},
		{guance.StatusClosed, []string{"pending", "reopen", "open_url"}},
		{guance.StatusPending, []string{"resolve", "reopen", "open_url"}},
		{0, []string{"resolve", "pending", "open_url"}},
	}
	for _, tt := range tests {
		is := cardTestIssue()
		is.StatusType = tt.status
		got, err := Render(Data{Issue: is, Revision: 42, ConsoleURL: cardConsole})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range cardElements(t, got) {
			if e["tag"] != "column_set" {
				continue
			}
			for _, c := range e["columns"].([]any) {
				b := c.(map[string]any)["elements"].([]any)[0].(map[string]any)
				beh := b["behaviors"].([]any)[0].(map[string]any)
				if beh["type"] == "open_url" {
					actions = append(actions, "open_url")
					if want := cardConsole + "/exceptions/exceptionsTracking?leftActiveKey=ExceptionsTracking&activeName=ExceptionsTracking&w=wksp_0123456789abcdef&classic=exceptions_tracing&issueName=SYS&sourceType=exceptions_tracing&__docid=issue_0123456789abcdef"; beh["default_url"] != want {
						t.Errorf("open_url = %v, want %v", beh["default_url"], want)
					}
					continue
				}
				a, err := ParseAction(beh["value"].(map[string]any))
				if err != nil {
					t.Fatal(err)
				}
				if a.Revision != 42 || a.IssueUUID != is.UUID {
					t.Errorf("button value = %+v", a)
				}
				actions = append(actions, a.Action)
			}
		}
		if diff := cmp.Diff(tt.want, actions); diff != "" {
			t.Errorf("status %v buttons (-want +got):\n%s", tt.status, diff)
		}
	}
}

func TestRenderCardNoConsole(t *testing.T) {
	is := cardTestIssue()
	is.Extend.SourceLink = "/x"
	for _, console := range []string{"", "javascript:alert(1)", "ftp://x"} {
		got, err := Render(Data{Issue: is, ConsoleURL: console})
		if err != nil {
			t.Fatal(err)
		}
		cardCheck(t, got)
		if s := string(got); strings.Contains(s, "open_url") || strings.Contains(s, "](") {
			t.Errorf("ConsoleURL %q: card links somewhere: %s", console, s)
		}
	}
	is.Extend.SourceLink = "javascript:alert(1)"
	got, _ := Render(Data{Issue: is, ConsoleURL: cardConsole})
	if strings.Contains(string(got), "javascript") {
		t.Errorf("card links to javascript: %s", got)
	}
}

func TestCardTemplate(t *testing.T) {
	tests := []struct {
		level  guance.LevelRef
		color  string
		status guance.StatusType
		want   string
	}{
		{"system_level_0", "", guance.StatusOpen, "red"},
		{"system_level_1", "", guance.StatusOpen, "orange"},
		{"system_level_2", "", guance.StatusWorking, "yellow"},
		{"system_level_3", "", guance.StatusOpen, "grey"},
		{"", "", guance.StatusOpen, "grey"},
		{"system_level_9", "#E94444", guance.StatusOpen, "grey"},
		{"system_level_0", "", guance.StatusResolved, "green"},
		{"system_level_0", "", guance.StatusClosed, "green"},
		{"system_level_0", "", guance.StatusPending, "blue"},
		{"issl_1", "#E94444", guance.StatusOpen, "red"},
		{"issl_1", "#FF7931", guance.StatusOpen, "orange"},
		{"issl_1", "#FFB44A", guance.StatusOpen, "yellow"},
		{"issl_1", "#C9C9C9", guance.StatusOpen, "grey"},
		{"issl_1", "#f00", guance.StatusOpen, "red"},
		{"issl_1", "#FF3366", guance.StatusOpen, "red"},
		{"issl_1", "#1E90FF", guance.StatusOpen, "grey"},
		{"issl_1", "#101010", guance.StatusOpen, "grey"},
		{"issl_1", "", guance.StatusOpen, "grey"},
		{"issl_1", "red", guance.StatusOpen, "grey"},
		{"issl_1", "#E94444", guance.StatusPending, "blue"},
	}
	for _, tt := range tests {
		if got := cardTemplate(tt.level, tt.color, tt.status); got != tt.want {
			t.Errorf("cardTemplate(%q, %q, %v) = %q, want %q", tt.level, tt.color, tt.status, got, tt.want)
		}
	}
}

func TestLevelDisplay(t *testing.T) {
	tests := []struct {
		ref          guance.LevelRef
		name         string
		wantZH, want string
	}{
		{"system_level_0", "", "P0", "P0"},
		{"system_level_1", "", "P1", "P1"},
		{"system_level_2", "", "P2", "P2"},
		{"system_level_3", "", "P3", "P3"},
		{"system_level_3", "未知", "未知", "Unknown"},
		{"", "", "未知", "Unknown"},
		{"", "Unknown", "未知", "Unknown"},
		{"system_level_1", "P1", "P1", "P1"},
		{"issl_0a1b2c3d4e5f6789", "", "issl_0a1b2c3d", "issl_0a1b2c3d"},
		{"issl_0a1b2c3d4e5f6789", " 紧急 ", "紧急", "紧急"},
		{"issl_short", "", "issl_short", "issl_short"},
		{"0123456789abcdef", "", "01234567", "01234567"},
		{"system_level_x", "", "system_level_x", "system_level_x"},
	}
	for _, tt := range tests {
		zh, en := LevelDisplay(tt.ref, tt.name)
		if zh != tt.wantZH || en != tt.want {
			t.Errorf("LevelDisplay(%q, %q) = %q, %q; want %q, %q", tt.ref, tt.name, zh, en, tt.wantZH, tt.want)
		}
	}
}

func TestParseCardAction(t *testing.T) {
	decoded := func(s string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	number := func(s string) map[string]any {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	ok := []struct {
		in   map[string]any
		want Action
	}{
		{decoded(`{"action":"resolve","issue":"issue_1","rev":3}`), Action{"resolve", "issue_1", 3, 0}},
		{number(`{"action":"pending","issue":"issue_1","rev":12}`), Action{"pending", "issue_1", 12, 0}},
		{decoded(`{"action":"reopen","issue":"issue_1","rev":"7"}`), Action{"reopen", "issue_1", 7, 0}},
		{decoded(`{"action":" Resolve ","issue":"issue_1","rev":"7.0"}`), Action{"resolve", "issue_1", 7, 0}},
		{map[string]any{"action": "resolve", "issue": "i", "rev": int64(5)}, Action{"resolve", "i", 5, 0}},
		{map[string]any{"action": "resolve", "issue": "i", "rev": 0}, Action{"resolve", "i", 0, 0}},
		{decoded(`{"action":"resolve","issue":"i","rev":9007199254740992}`), Action{"resolve", "i", 1 << 53, 0}},
		{decoded(`{"action":"resolve","issue":"i","rev":4,"st":20}`), Action{"resolve", "i", 4, 20}},
		{decoded(`{"action":"reopen","issue":"i","rev":4,"st":"oops"}`), Action{"reopen", "i", 4, 0}},
	}
	for _, tt := range ok {
		got, err := ParseAction(tt.in)
		if err != nil {
			t.Errorf("ParseAction(%v): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseAction(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	bad := []map[string]any{
		nil,
		decoded(`{"issue":"i","rev":1}`),
		decoded(`{"action":"","issue":"i","rev":1}`),
		decoded(`{"action":"delete","issue":"i","rev":1}`),
		decoded(`{"action":1,"issue":"i","rev":1}`),
		decoded(`{"action":"resolve","rev":1}`),
		decoded(`{"action":"resolve","issue":"","rev":1}`),
		decoded(`{"action":"resolve","issue":"i"}`),
		decoded(`{"action":"resolve","issue":"i","rev":null}`),
		decoded(`{"action":"resolve","issue":"i","rev":1.5}`),
		decoded(`{"action":"resolve","issue":"i","rev":-1}`),
		decoded(`{"action":"resolve","issue":"i","rev":"x"}`),
		decoded(`{"action":"resolve","issue":"i","rev":"-2"}`),
		decoded(`{"action":"resolve","issue":"i","rev":true}`),
		decoded(`{"action":"resolve","issue":"i","rev":1e300}`),
	}
	for _, in := range bad {
		if got, err := ParseAction(in); err == nil {
			t.Errorf("ParseAction(%v) = %+v, want error", in, got)
		}
	}
	for action, want := range map[string]guance.StatusType{"resolve": guance.StatusResolved, "pending": guance.StatusPending, "reopen": guance.StatusOpen, "x": 0} {
		if got := (Action{Action: action}).Status(); got != want {
			t.Errorf("Action{%q}.Status() = %v, want %v", action, got, want)
		}
	}
}

func FuzzRenderCard(f *testing.F) {
	f.Add("Disk full", "<p>desc</p>", "", "APM-http://x", "张三")
	f.Add("[x](http://evil)", "", "@a  #b nn", "", "")
	f.Add(strings.Repeat("标题", 300), strings.Repeat("<br>&nbsp;", 5000), strings.Repeat("\"", 4000), strings.Repeat("(", 3000), strings.Repeat("*", 500))
	f.Add("\xff\x00", "\u202e\r\n", "\t", "<at id=all></at>", "`~_")
	f.Fuzz(func(t *testing.T, title, desc, text, resource, who string) {
		is := cardTestIssue()
		is.Name, is.Description, is.Extend.Text, is.Resource = title, desc, text, resource
		is.Extend.SourceLink = resource
		is.CreatorInfo = &guance.UserInfo{Name: who}
		got, err := Render(Data{Issue: is, LevelName: who, LevelColor: title, ChannelName: resource,
			ConsoleURL: cardConsole, LastChange: &Change{Who: who, Action: text}})
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON")
		}
		if len(got) >= 28*1024 {
			t.Fatalf("card is %d bytes", len(got))
		}
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil {
			t.Fatal(err)
		}
		if p := cardValidate(m); len(p) > 0 {
			t.Fatalf("invalid card: %v", p)
		}
	})
}

func TestCardBoldProblem(t *testing.T) {
	for _, tt := range []struct {
		in   string
		safe bool
	}{
		{"**等级：** P3", true},
		{"**Level:** P3\n**Status:** Open", true},
		{"a **b** c", true},
		{"**等级**：P3", false},  // closer against CJK punctuation
		{"**等级：**P3", false},  // closer against a letter
		{"说明**重点** 后", false}, // opener against a letter
		{"no bold at all", true},
	} {
		if got := cardBoldProblem(tt.in) == ""; got != tt.safe {
			t.Errorf("cardBoldProblem(%q) safe = %v, want %v", tt.in, got, tt.safe)
		}
	}
}

// TestHelpCardBold: the help card's bold labels render in both languages.
func TestHelpCardBold(t *testing.T) {
	var card struct {
		Body struct {
			Elements []struct {
				Content string            `json:"content"`
				I18n    map[string]string `json:"i18n_content"`
			} `json:"elements"`
		} `json:"body"`
	}
	if err := json.Unmarshal(Help(), &card); err != nil {
		t.Fatal(err)
	}
	for _, e := range card.Body.Elements {
		for _, s := range []string{e.Content, e.I18n["zh_cn"], e.I18n["en_us"]} {
			if p := cardBoldProblem(s); p != "" {
				t.Error(p)
			}
		}
	}
}
