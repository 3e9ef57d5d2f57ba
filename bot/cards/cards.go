// Package cards renders issuebot's Feishu cards (JSON 2.0, every fixed string in zh_cn
// and en_us): the issue card, a pure function of Data tested with golden files, and
// the help card; and it decodes the value a card button sends back (Action). It does
// no I/O.
package cards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"issuebot/bot/plaintext"
	"issuebot/guance"
)

// MaxBytes is Feishu's limit on a card's JSON. Render stays well below it.
const MaxBytes = 30 * 1024

// Card size budget and the lengths user text is cut to before the card is built. The
// description is cut to DescRunes and then halved until the card fits cardBudget.
const (
	cardBudget       = 28 * 1024 // Render's output is always shorter
	DescRunes        = 3000
	TitleRunes       = 200
	cardSummaryRunes = 100
	cardFieldRunes   = 100 // creator, channel, who
	cardLevelRunes   = 50
	cardSourceRunes  = 200 // the source link's text in the body
	cardSubSrcRunes  = 60  // the source in the header's one-line subtitle
	cardMaxURLBytes  = 1500
	TimeLayout       = "2006-01-02 15:04:05"
)

// cardTruncated marks a cut description; the card has no room for i18n of user text.
const cardTruncated = "\n…（已截断，完整内容见 Guance）/ … (truncated, see Guance)"

// Card button actions, the "action" of a button's callback value.
const (
	ActionResolve = "resolve"
	ActionPending = "pending"
	ActionReopen  = "reopen"
	// ActionCard, on a storm digest, posts the issue's own card.
	ActionCard = "card"
)

// Data is everything an issue card shows. Render is a pure function of it.
type Data struct {
	Issue guance.Issue
	// LevelName is the level's display name from the level list ("P1", a custom name);
	// "" derives one from Issue.Level (see LevelDisplay).
	LevelName string
	// LevelColor is a custom level's colour ("#E94444"); it picks the header colour.
	LevelColor string
	// ChannelName is shown in the subtitle; "default" is shown as 全部/All.
	ChannelName string
	// Revision is the card's revision, put into every button's value.
	Revision int64
	// LastChange is who last changed the status (from the chat, or in Guance); nil if
	// nobody did.
	LastChange *Change
	// Deleted says the issue was deleted in Guance: the card says so and has no
	// status buttons.
	Deleted bool
	// SyncedReplies is the number of replies synced, shown in the footer.
	SyncedReplies int
	// ConsoleURL is the Guance console base, e.g. "https://console.guance.com". Empty
	// leaves out the source link and the "Open in Guance" button.
	ConsoleURL string
	// Location is the zone times are shown in; nil means UTC.
	Location *time.Location
	// ButtonsUntil, when set, is when Feishu stops taking the card's buttons (14 days
	// after it was sent): the card says so, and what to do after.
	ButtonsUntil time.Time
}

// Change is a status change made from the chat.
type Change struct {
	Who string
	// Action is "resolve", "pending" or "reopen".
	Action string
	At     time.Time
}

// Action is a decoded button click: the value object of a card button,
// {"action": "resolve"|"pending"|"reopen", "issue": "<issue uuid>", "rev": <revision>,
// "st": <status shown>}.
type Action struct {
	Action    string
	IssueUUID string
	Revision  int64
	// Shown is the status the card showed when clicked; 0 for cards rendered before
	// buttons carried it.
	Shown guance.StatusType
}

// Status returns the issue status the action sets: Resolved, Pending or Open (reopen);
// 0 for an unknown action.
func (a Action) Status() guance.StatusType {
	switch a.Action {
	case ActionResolve:
		return guance.StatusResolved
	case ActionPending:
		return guance.StatusPending
	case ActionReopen:
		return guance.StatusOpen
	}
	return 0
}

// ParseAction decodes a button's callback value. It is tolerant of how the value
// was decoded: rev may be a float64 (encoding/json), a json.Number, an integer or a
// numeric string. A missing or unknown action, a missing issue or an invalid rev is an
// error.
func ParseAction(v map[string]any) (Action, error) {
	var a Action
	action, _ := v["action"].(string)
	switch action = strings.ToLower(strings.TrimSpace(action)); action {
	case ActionResolve, ActionPending, ActionReopen, ActionCard:
		a.Action = action
	case "":
		return Action{}, errors.New("parse card action: missing action")
	default:
		return Action{}, fmt.Errorf("parse card action: unknown action %q", action)
	}
	issue, _ := v["issue"].(string)
	if a.IssueUUID = strings.TrimSpace(issue); a.IssueUUID == "" {
		return Action{}, errors.New("parse card action: missing issue")
	}
	if a.Action == ActionCard {
		return a, nil // a digest's button carries no revision
	}
	rev, err := cardRevision(v["rev"])
	if err != nil {
		return Action{}, fmt.Errorf("parse card action: %w", err)
	}
	a.Revision = rev
	if st, err := cardRevision(v["st"]); err == nil && st < 1000 {
		a.Shown = guance.StatusType(st)
	}
	return a, nil
}

// cardRevision reads a button value's rev.
func cardRevision(v any) (int64, error) {
	var f float64
	switch n := v.(type) {
	case nil:
		return 0, errors.New("missing rev")
	case float64:
		f = n
	case float32:
		f = float64(n)
	case int:
		f = float64(n)
	case int64:
		return cardNonNegative(n)
	case int32:
		return cardNonNegative(int64(n))
	case json.Number:
		return cardParseRev(string(n))
	case string:
		return cardParseRev(n)
	default:
		return 0, fmt.Errorf("rev of type %T", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f < 0 || f > 1<<53 {
		return 0, fmt.Errorf("invalid rev %v", f)
	}
	return int64(f), nil
}

func cardParseRev(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return cardNonNegative(n)
	}
	// "3.0" or "3e0", as some JSON round trips write it.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid rev %q", s)
	}
	return cardRevision(f)
}

func cardNonNegative(n int64) (int64, error) {
	if n < 0 {
		return 0, fmt.Errorf("invalid rev %d", n)
	}
	return n, nil
}

// LevelDisplay returns a level's display name in Chinese and English. name is the name
// from the level list; when it is "" the name is derived from ref: system_level_N is PN,
// no level is 未知/Unknown, and another uuid is shown in its short form. The name 未知
// (Guance's name for P3 in some answers) is shown as 未知/Unknown.
func LevelDisplay(ref guance.LevelRef, name string) (zh, en string) {
	if name = strings.TrimSpace(name); name != "" {
		if name == "未知" || strings.EqualFold(name, "unknown") {
			return "未知", "Unknown"
		}
		return name, name
	}
	r := strings.TrimSpace(string(ref))
	if r == "" {
		return "未知", "Unknown"
	}
	if n, ok := strings.CutPrefix(r, "system_level_"); ok && cardDigits(n) {
		return "P" + n, "P" + n
	}
	s := cardShortID(r)
	return s, s
}

// cardShortID shortens a uuid like git shortens a hash: "issl_0123456789ab" → "issl_01234567".
func cardShortID(id string) string {
	prefix, rest, ok := strings.Cut(id, "_")
	if !ok {
		prefix, rest = "", id
	} else {
		prefix += "_"
	}
	if utf8.RuneCountInString(rest) <= 8 {
		return id
	}
	return prefix + plaintext.Truncate(rest, 8, "")
}

func cardDigits(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Render renders an issue card as Feishu card JSON 2.0, every fixed string in zh_cn
// and en_us. The result is always shorter than 28 KB (MaxBytes is 30 KB): user text
// is cut to sane lengths and the description shortened until the card fits. The output
// is deterministic. Render fails only if even a card without a description is too
// big, which the length limits rule out.
func Render(d Data) ([]byte, error) {
	c := newCardView(d)
	desc := c.description()
	for limit := DescRunes; ; limit /= 2 {
		text := desc
		if utf8.RuneCountInString(text) > limit {
			if limit < 50 {
				limit = 0
			}
			text = strings.TrimSpace(cardTruncated)
			if limit > 0 {
				text = plaintext.Truncate(desc, limit, cardTruncated)
			}
		}
		out, err := c.encode(text)
		if err != nil {
			return nil, fmt.Errorf("render card: %w", err)
		}
		if len(out) < cardBudget {
			return out, nil
		}
		if limit == 0 {
			return nil, fmt.Errorf("render card: %d bytes without a description", len(out))
		}
	}
}

// cardView holds the card's strings, cut and escaped, ready to lay out.
type cardView struct {
	d        Data
	levelZH  string
	levelEN  string
	template string
	tagColor string
	statusZH string
	statusEN string
}

func newCardView(d Data) *cardView {
	c := &cardView{d: d}
	zh, en := LevelDisplay(d.Issue.Level, d.LevelName)
	c.levelZH, c.levelEN = cardLine(zh, cardLevelRunes), cardLine(en, cardLevelRunes)
	c.template = cardTemplate(d.Issue.Level, d.LevelColor, d.Issue.StatusType)
	c.tagColor = c.template
	if c.template == "grey" {
		c.tagColor = "neutral" // text_tag has no grey
	}
	c.statusZH, c.statusEN = StatusText(d.Issue.StatusType)
	if d.Deleted {
		c.statusZH, c.statusEN = "已删除", "Deleted"
		c.template, c.tagColor = "grey", "neutral"
	}
	return c
}

// cardTemplate picks the header colour: a resolved or closed issue is green and a
// pending one blue; otherwise P0 red, P1 orange, P2 yellow, P3, unknown and no level
// grey, and a custom level by the hue of its colour.
func cardTemplate(level guance.LevelRef, color string, s guance.StatusType) string {
	switch s {
	case guance.StatusResolved, guance.StatusClosed:
		return "green"
	case guance.StatusPending:
		return "blue"
	}
	switch level {
	case "system_level_0":
		return "red"
	case "system_level_1":
		return "orange"
	case "system_level_2":
		return "yellow"
	case "", "system_level_3":
		return "grey"
	}
	if strings.HasPrefix(string(level), "system_level_") {
		return "grey"
	}
	return cardColorTemplate(color)
}

// cardColorTemplate maps a "#RRGGBB" or "#RGB" colour to red, orange, yellow or grey by
// its hue. The system level colours land where their levels do: #E94444 red, #FF7931
// orange, #FFB44A yellow, #C9C9C9 grey.
func cardColorTemplate(color string) string {
	h := strings.TrimPrefix(strings.TrimSpace(color), "#")
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	if len(h) != 6 {
		return "grey"
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return "grey"
	}
	r, g, b := float64(v>>16&0xff)/255, float64(v>>8&0xff)/255, float64(v&0xff)/255
	hi, lo := max(r, g, b), min(r, g, b)
	if hi-lo < 0.15 || hi < 0.25 {
		return "grey" // unsaturated or nearly black: no hue to speak of
	}
	var hue float64
	switch hi {
	case r:
		hue = math.Mod(60*(g-b)/(hi-lo)+360, 360)
	case g:
		hue = 60*(b-r)/(hi-lo) + 120
	default:
		hue = 60*(r-g)/(hi-lo) + 240
	}
	switch {
	case hue < 12 || hue >= 330:
		return "red"
	case hue < 30:
		return "orange"
	case hue < 70:
		return "yellow"
	}
	return "grey"
}

// StatusText names a status in Chinese and English.
func StatusText(s guance.StatusType) (zh, en string) {
	switch s {
	case guance.StatusOpen:
		return "打开", "Open"
	case guance.StatusWorking:
		return "处理中", "Working"
	case guance.StatusResolved:
		return "已解决", "Resolved"
	case guance.StatusClosed:
		return "已关闭", "Closed"
	case guance.StatusPending:
		return "挂起", "Pending"
	}
	return "未知", "Unknown"
}

// description is the text the card shows: extend.text when set, else the description
// made plain.
func (c *cardView) description() string {
	is := &c.d.Issue
	if t := is.Text(); t != "" {
		return plaintext.Clean(t, false)
	}
	return plaintext.FromHTML(is.Description)
}

// encode lays the card out with the given description and marshals it.
func (c *cardView) encode(desc string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<" as \u003c would cost 6 bytes apiece
	if err := enc.Encode(c.layout(desc)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (c *cardView) layout(desc string) cardJSON {
	is := &c.d.Issue
	title := cardLine(is.Name, TitleRunes)

	var k cardJSON
	k.Schema = "2.0"
	k.Config.UpdateMulti = true
	summaryTitle := cardLine(is.Name, cardSummaryRunes)
	k.Config.Summary = &cardI18nText{
		Content: "[" + c.levelEN + "] " + summaryTitle,
		I18n:    &cardI18n{ZH: "[" + c.levelZH + "] " + summaryTitle, EN: "[" + c.levelEN + "] " + summaryTitle},
	}
	if title == "" {
		k.Config.Summary.Content = "[" + c.levelEN + "] (untitled)"
		k.Config.Summary.I18n = &cardI18n{ZH: "[" + c.levelZH + "] （无标题）", EN: k.Config.Summary.Content}
		k.Header.Title = cardPlain("（无标题）", "(untitled)")
	} else {
		k.Header.Title = cardText{Tag: "plain_text", Content: title}
	}
	k.Header.Subtitle = c.subtitle()
	k.Header.Template = c.template
	// A text tag's text takes no i18n_content: the documented multilingual form is
	// i18n_text_tag_list, which wins over text_tag_list where the client supports it.
	tag := func(s string) []cardTextTag {
		return []cardTextTag{{Tag: "text_tag", Text: cardText{Tag: "plain_text", Content: s}, Color: c.tagColor}}
	}
	k.Header.TextTagList = tag(c.statusEN)
	k.Header.I18nTextTagList = map[string][]cardTextTag{"zh_cn": tag(c.statusZH), "en_us": tag(c.statusEN)}

	els := []any{c.fields(), cardHR{Tag: "hr"}}
	if desc == "" {
		els = append(els, cardDiv{Tag: "div", Text: cardPlain("（无描述）", "(no description)")})
	} else {
		els = append(els, cardDiv{Tag: "div", Text: cardText{Tag: "plain_text", Content: desc}})
	}
	if bs := c.buttons(); len(bs.Columns) > 0 {
		els = append(els, bs)
	}
	if n, ok := c.expiryNote(); ok {
		els = append(els, n)
	}
	els = append(els, c.footer())
	k.Body.Elements = els
	return k
}

// subtitle is "Guance 异常追踪 · <channel> · <source>" in both languages.
func (c *cardView) subtitle() *cardText {
	zh, en := []string{"Guance 异常追踪"}, []string{"Guance Issues"}
	switch ch := cardLine(c.d.ChannelName, cardFieldRunes); ch {
	case "":
	case "default":
		zh, en = append(zh, "全部"), append(en, "All")
	default:
		zh, en = append(zh, ch), append(en, ch)
	}
	if src := cardLine(c.source(), cardSubSrcRunes); src != "" {
		zh, en = append(zh, src), append(en, src)
	}
	t := cardPlain(strings.Join(zh, " · "), strings.Join(en, " · "))
	return &t
}

// source names the issue's source: its resource, else its resource type.
func (c *cardView) source() string {
	if r := strings.TrimSpace(c.d.Issue.Resource); r != "" {
		return r
	}
	return strings.TrimSpace(c.d.Issue.ResourceType)
}

// fields is the markdown block of level, status, creator, created time and source.
func (c *cardView) fields() cardMarkdown {
	is := &c.d.Issue
	creator := ""
	if is.CreatorInfo != nil {
		creator = is.CreatorInfo.Name
	}
	if strings.TrimSpace(creator) == "" {
		creator = is.Creator
	}
	creator = cardMD(cardLine(creator, cardFieldRunes))
	if creator == "" {
		creator = "-"
	}
	created := "-"
	if !is.CreateAt.IsZero() {
		created = is.CreateAt.Time().In(c.loc()).Format(TimeLayout)
	}
	var zh, en []string
	add := func(labelZH, labelEN, valueZH, valueEN string) {
		// Feishu renders bold reliably only with whitespace (or a line's edge) on both
		// sides of the run; next to CJK punctuation it may print the asterisks.
		zh = append(zh, "**"+labelZH+"：** "+valueZH)
		en = append(en, "**"+labelEN+":** "+valueEN)
	}
	add("等级", "Level", cardMD(c.levelZH), cardMD(c.levelEN))
	add("状态", "Status", c.statusZH, c.statusEN)
	add("创建人", "Creator", creator, creator)
	add("创建时间", "Created", created, created)
	if link := c.sourceURL(); link != "" {
		text := cardMD(cardLine(c.source(), cardSourceRunes))
		if text == "" {
			add("来源", "Source", "[来源]("+link+")", "[source]("+link+")")
		} else {
			add("来源", "Source", "["+text+"]("+link+")", "["+text+"]("+link+")")
		}
	} else if src := cardMD(cardLine(c.source(), cardSourceRunes)); src != "" {
		add("来源", "Source", src, src)
	}
	return cardMarkdown{
		Tag:     "markdown",
		Content: strings.Join(en, "\n"),
		I18n:    &cardI18n{ZH: strings.Join(zh, "\n"), EN: strings.Join(en, "\n")},
	}
}

func (c *cardView) loc() *time.Location {
	if c.d.Location == nil {
		return time.UTC
	}
	return c.d.Location
}

// sourceURL is ConsoleURL + extend.sourceLink, "" when either is missing or the result
// is not a sane http(s) URL.
func (c *cardView) sourceURL() string {
	link := strings.TrimSpace(c.d.Issue.Extend.SourceLink)
	if link == "" {
		return ""
	}
	if !cardIsHTTP(link) {
		if cardHasScheme(link) {
			return "" // javascript:, ftp:, …
		}
		base := c.console()
		if base == "" {
			return ""
		}
		if !strings.HasPrefix(link, "/") {
			link = "/" + link
		}
		link = base + link
	}
	return cardSafeURL(link)
}

// console is ConsoleURL without its trailing slash, "" unless it is http(s).
func (c *cardView) console() string {
	base := strings.TrimRight(strings.TrimSpace(c.d.ConsoleURL), "/")
	if !cardIsHTTP(base) {
		return ""
	}
	return base
}

// issueURL is the issue's page in the console (guance.md §3.7; no documented permalink).
func (c *cardView) issueURL() string {
	base := c.console()
	if base == "" {
		return ""
	}
	is := &c.d.Issue
	q := "leftActiveKey=ExceptionsTracking&activeName=ExceptionsTracking" +
		"&w=" + url.QueryEscape(is.WorkspaceUUID) +
		"&classic=exceptions_tracing&issueName=SYS&sourceType=exceptions_tracing" +
		"&__docid=" + url.QueryEscape(is.UUID)
	return cardSafeURL(base + "/exceptions/exceptionsTracking?" + q)
}

// buttons is the row of buttons the issue's status allows.
func (c *cardView) buttons() cardColumnSet {
	is := &c.d.Issue
	s := is.StatusType
	done := s == guance.StatusResolved || s == guance.StatusClosed
	var cols []cardColumn
	add := func(b cardButton) {
		cols = append(cols, cardColumn{Tag: "column", Width: "auto", Elements: []any{b}})
	}
	callback := func(action, zh, en, typ string) {
		add(cardButton{
			Tag:  "button",
			Text: cardPlain(zh, en),
			Type: typ,
			Behaviors: []cardBehavior{{
				Type:  "callback",
				Value: &cardButtonValue{Action: action, Issue: is.UUID, Rev: c.d.Revision, St: int(is.StatusType)},
			}},
		})
	}
	if is.UUID != "" && !c.d.Deleted {
		if !done {
			callback(ActionResolve, "解决", "Resolve", "primary")
		}
		if s != guance.StatusPending {
			callback(ActionPending, "挂起", "Pending", "default")
		}
		if done || s == guance.StatusPending {
			callback(ActionReopen, "重新打开", "Reopen", "default")
		}
	}
	if u := c.issueURL(); u != "" && is.UUID != "" {
		add(cardButton{
			Tag:       "button",
			Text:      cardPlain("在 Guance 中查看", "Open in Guance"),
			Type:      "default",
			Behaviors: []cardBehavior{{Type: "open_url", DefaultURL: u}},
		})
	}
	return cardColumnSet{Tag: "column_set", FlexMode: "flow", Columns: cols}
}

// expiryNote says when the buttons stop working and what works after.
func (c *cardView) expiryNote() (cardMarkdown, bool) {
	if c.d.ButtonsUntil.IsZero() || c.d.Deleted {
		return cardMarkdown{}, false
	}
	at := c.d.ButtonsUntil.In(c.loc()).Format("01-02 15:04")
	zh := "⚠️ 卡片按钮将于 " + at + " 失效。之后请在本卡片的话题里 @机器人 resolve / pending / reopen；Issue 再有变化时，话题里会发一张新卡片。"
	en := "⚠️ The buttons stop working on " + at + ". After that, @ the bot with resolve / pending / reopen in this card's thread; the next change of the issue posts a fresh card in the thread."
	return cardMarkdown{Tag: "markdown", Content: en, I18n: &cardI18n{ZH: zh, EN: en}}, true
}

// footer is the grey line of the last change and the replies synced.
func (c *cardView) footer() cardMarkdown {
	var zh, en []string
	if ch := c.d.LastChange; ch != nil {
		who := cardMD(cardLine(ch.Who, cardFieldRunes))
		if who == "" {
			who = "?"
		}
		vzh, ven := "修改了状态", "changed the status"
		switch ch.Action {
		case ActionResolve:
			vzh, ven = "标记为已解决", "resolved"
		case ActionPending:
			vzh, ven = "标记为挂起", "marked pending"
		case ActionReopen:
			vzh, ven = "重新打开", "reopened"
		}
		if ch.At.IsZero() {
			zh = append(zh, who+" "+vzh)
			en = append(en, who+" "+ven)
		} else {
			at := ch.At.In(c.loc()).Format("01-02 15:04")
			zh = append(zh, who+" 于 "+at+" "+vzh)
			en = append(en, who+" "+ven+" at "+at)
		}
	}
	n := max(c.d.SyncedReplies, 0)
	zh = append(zh, "已同步 "+strconv.Itoa(n)+" 条回复")
	if n == 1 {
		en = append(en, "1 reply synced")
	} else {
		en = append(en, strconv.Itoa(n)+" replies synced")
	}
	font := func(parts []string) string {
		return "<font color='grey'>" + strings.Join(parts, " · ") + "</font>"
	}
	return cardMarkdown{
		Tag:     "markdown",
		Content: font(en),
		I18n:    &cardI18n{ZH: font(zh), EN: font(en)},
	}
}

// cardLine makes user text one clean line of at most n runes.
func cardLine(s string, n int) string {
	s = plaintext.Clean(s, true)
	s = strings.Join(strings.Fields(s), " ")
	return plaintext.Truncate(s, n, "…")
}

// cardMDEscapes turns the characters lark markdown gives a meaning into the entities
// Feishu documents for showing them literally, so user text cannot inject a link, an
// @all or formatting. "&" is escaped only where it would start an entity.
var cardMDEscapes = map[rune]string{
	'*': "&#42;", '_': "&#95;", '~': "&sim;", '`': "&#96;", '[': "&#91;", ']': "&#93;",
	'(': "&#40;", ')': "&#41;", '<': "&#60;", '>': "&#62;", '#': "&#35;", '\\': "&#92;",
	'$': "&#36;", '|': "&#124;",
}

// cardMD escapes one line of user text for a lark markdown field.
func cardMD(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\n' || r == '\r':
			b.WriteByte(' ')
		case r == '&' && cardEntityAt(s[i+1:]):
			b.WriteString("&#38;")
		case cardMDEscapes[r] != "":
			b.WriteString(cardMDEscapes[r])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cardEntityAt reports whether s (what follows an "&") reads as an entity: "#…;" or
// letters followed by ";".
func cardEntityAt(s string) bool {
	for i := 0; i < len(s) && i < 32; i++ {
		c := s[i]
		switch {
		case c == ';':
			return i > 0
		case c == '#' && i == 0, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return false
}

// cardHasScheme reports whether u starts with a URL scheme ("javascript:").
func cardHasScheme(u string) bool {
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == ':':
			return i > 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return false
}

func cardIsHTTP(u string) bool {
	l := strings.ToLower(u)
	return strings.HasPrefix(l, "https://") || strings.HasPrefix(l, "http://")
}

// cardSafeURL percent-encodes what would end a markdown link or break a URL (spaces,
// quotes, brackets, parentheses, control and non-ASCII bytes) and returns "" for a URL
// that is not http(s) or is too long to be worth a link.
func cardSafeURL(u string) string {
	if !cardIsHTTP(u) {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"'<>()[]{}|\^`+"`", c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	if b.Len() > cardMaxURLBytes {
		return ""
	}
	return b.String()
}

// cardPlain is a plain_text in both languages.
func cardPlain(zh, en string) cardText {
	return cardText{Tag: "plain_text", Content: en, I18n: &cardI18n{ZH: zh, EN: en}}
}

// The card JSON 2.0 wire types. They are structs, not maps, so the key order is fixed,
// and they hold only properties JSON 2.0 accepts (it rejects unknown ones with 230099).
type (
	cardJSON struct {
		Schema string     `json:"schema"`
		Config cardConfig `json:"config"`
		Header cardHeader `json:"header"`
		Body   cardBody   `json:"body"`
	}
	cardConfig struct {
		UpdateMulti bool          `json:"update_multi"`
		Summary     *cardI18nText `json:"summary,omitempty"`
	}
	cardI18nText struct {
		Content string    `json:"content"`
		I18n    *cardI18n `json:"i18n_content,omitempty"`
	}
	cardI18n struct {
		ZH string `json:"zh_cn"`
		EN string `json:"en_us"`
	}
	cardHeader struct {
		Title           cardText                 `json:"title"`
		Subtitle        *cardText                `json:"subtitle,omitempty"`
		Template        string                   `json:"template"`
		TextTagList     []cardTextTag            `json:"text_tag_list,omitempty"`
		I18nTextTagList map[string][]cardTextTag `json:"i18n_text_tag_list,omitempty"`
	}
	cardText struct {
		Tag     string    `json:"tag"`
		Content string    `json:"content"`
		I18n    *cardI18n `json:"i18n_content,omitempty"`
	}
	cardTextTag struct {
		Tag   string   `json:"tag"`
		Text  cardText `json:"text"`
		Color string   `json:"color"`
	}
	cardBody struct {
		Elements []any `json:"elements"`
	}
	cardMarkdown struct {
		Tag     string    `json:"tag"`
		Content string    `json:"content"`
		I18n    *cardI18n `json:"i18n_content,omitempty"`
	}
	cardDiv struct {
		Tag  string   `json:"tag"`
		Text cardText `json:"text"`
	}
	cardHR struct {
		Tag string `json:"tag"`
	}
	cardColumnSet struct {
		Tag      string       `json:"tag"`
		FlexMode string       `json:"flex_mode"`
		Columns  []cardColumn `json:"columns"`
	}
	cardColumn struct {
		Tag      string `json:"tag"`
		Width    string `json:"width"`
		Elements []any  `json:"elements"`
	}
	cardButton struct {
		Tag       string         `json:"tag"`
		Text      cardText       `json:"text"`
		Type      string         `json:"type"`
		Behaviors []cardBehavior `json:"behaviors"`
	}
	cardBehavior struct {
		Type       string           `json:"type"`
		Value      *cardButtonValue `json:"value,omitempty"`
		DefaultURL string           `json:"default_url,omitempty"`
	}
	cardButtonValue struct {
		Action string `json:"action"`
		Issue  string `json:"issue"`
		Rev    int64  `json:"rev"`
		// St is the status the card showed; a click on a card that showed another
		// status than the issue has now is stale.
		St int `json:"st"`
	}
)
