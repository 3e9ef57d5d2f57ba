package feishu

import (
	"encoding/json"
	"strings"
)

// Text renders a Feishu message's content as plain text for Guance: text and
// rich-text (post) messages become their text, @_user_N placeholders become "@Name"
// (the bot's own mention is removed), links keep their address, and media become
// markers like [image]. It never fails: content it cannot read becomes a marker.
func (m Message) Text(botOpenID string) string {
	var out string
	switch m.MessageType {
	case "text":
		var c struct {
			Text string `json:"text"`
		}
		if json.Unmarshal([]byte(m.Content), &c) != nil {
			return "[text]"
		}
		out = c.Text
	case "post":
		out = postText(m.Content)
	case "image":
		out = "[image]"
	case "file":
		var c struct {
			FileName string `json:"file_name"`
		}
		_ = json.Unmarshal([]byte(m.Content), &c)
		if c.FileName != "" {
			out = "[file: " + c.FileName + "]"
		} else {
			out = "[file]"
		}
	case "audio":
		out = "[audio]"
	case "media":
		out = "[video]"
	case "sticker":
		out = "[sticker]"
	case "interactive":
		out = "[card]"
	case "share_chat":
		out = "[shared chat]"
	case "share_user":
		out = "[shared contact]"
	default:
		out = "[" + m.MessageType + "]"
	}
	return tidyText(replaceMentions(out, m.Mentions, botOpenID))
}

// replaceMentions swaps @_user_N placeholders for "@Name" and drops mentions of the bot.
// Longer keys go first so that @_user_10 is not read as @_user_1 followed by "0".
func replaceMentions(s string, mentions []Mention, botOpenID string) string {
	ms := append([]Mention(nil), mentions...)
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && len(ms[j].Key) > len(ms[j-1].Key); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
	pairs := make([]string, 0, 2*len(ms)+2)
	for _, mn := range ms {
		if mn.Key == "" {
			continue
		}
		repl := "@" + mn.Name
		if mn.Name == "" {
			repl = "@" + mn.OpenID
		}
		if botOpenID != "" && mn.OpenID == botOpenID {
			pairs = append(pairs, mn.Key+" ", "", mn.Key, "")
			continue
		}
		pairs = append(pairs, mn.Key, repl)
	}
	pairs = append(pairs, "@_all", "@all")
	return strings.NewReplacer(pairs...).Replace(s)
}

// MentionsBot reports whether m @-mentions the bot.
func (m Message) MentionsBot(botOpenID string) bool {
	for _, mn := range m.Mentions {
		if botOpenID != "" && mn.OpenID == botOpenID {
			return true
		}
	}
	return false
}

// postElement is one inline element of a rich-text (post) paragraph.
type postElement struct {
	Tag       string `json:"tag"`
	Text      string `json:"text"`
	Href      string `json:"href"`
	UserID    string `json:"user_id"`
	UserName  string `json:"user_name"`
	EmojiType string `json:"emoji_type"`
	FileName  string `json:"file_name"`
}

type postBody struct {
	Title   string          `json:"title"`
	Content [][]postElement `json:"content"`
}

// postText renders post content. Received posts are usually not wrapped in a locale,
// sent ones are ({"zh_cn": {...}}); both are accepted.
func postText(content string) string {
	var direct postBody
	if err := json.Unmarshal([]byte(content), &direct); err == nil && (direct.Title != "" || len(direct.Content) > 0) {
		return renderPost(direct)
	}
	var wrapped map[string]json.RawMessage
	if json.Unmarshal([]byte(content), &wrapped) != nil {
		return "[post]"
	}
	for _, loc := range []string{"zh_cn", "en_us", "ja_jp"} {
		if raw, ok := wrapped[loc]; ok {
			var p postBody
			if json.Unmarshal(raw, &p) == nil {
				return renderPost(p)
			}
		}
	}
	for _, raw := range wrapped {
		var p postBody
		if json.Unmarshal(raw, &p) == nil && (p.Title != "" || len(p.Content) > 0) {
			return renderPost(p)
		}
	}
	return "[post]"
}

func renderPost(p postBody) string {
	var b strings.Builder
	if p.Title != "" {
		b.WriteString(p.Title)
		b.WriteString("\n")
	}
	for i, para := range p.Content {
		if i > 0 {
			b.WriteString("\n")
		}
		for _, e := range para {
			switch e.Tag {
			case "text", "md":
				b.WriteString(e.Text)
			case "a":
				switch {
				case e.Text == "" || e.Text == e.Href:
					b.WriteString(e.Href)
				case e.Href == "":
					b.WriteString(e.Text)
				default:
					b.WriteString(e.Text + " (" + e.Href + ")")
				}
			case "at":
				// user_id holds the @_user_N placeholder (or "all"); replaceMentions resolves it.
				switch {
				case e.UserID == "all" || e.UserID == "@_all":
					b.WriteString("@all")
				case strings.HasPrefix(e.UserID, "@_"):
					b.WriteString(e.UserID)
				case e.UserName != "":
					b.WriteString("@" + e.UserName)
				}
			case "img":
				b.WriteString("[image]")
			case "media":
				b.WriteString("[video]")
			case "emotion":
				b.WriteString("[" + strings.ToLower(e.EmojiType) + "]")
			case "code_block":
				b.WriteString("\n" + e.Text + "\n")
			case "hr":
				b.WriteString("\n---\n")
			default:
				if e.Text != "" {
					b.WriteString(e.Text)
				}
			}
		}
	}
	return b.String()
}

// tidyText trims each line's trailing spaces and drops leading and trailing blank
// lines; spacing inside lines (code, tables) is kept.
func tidyText(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Trim(strings.Join(lines, "\n"), " \n\t")
}
