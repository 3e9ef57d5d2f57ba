package bot

import (
	"strings"
	"testing"
	"unicode/utf8"

	"issuebot/bot/feishu"
)

const testBotID = "ou_bot"

func TestMessageText(t *testing.T) {
	bob := feishu.Mention{Key: "@_user_1", OpenID: "ou_bob", Name: "李四"}
	bot := feishu.Mention{Key: "@_user_2", OpenID: testBotID, Name: "issuebot"}
	tests := []struct {
		name     string
		typ      string
		content  string
		mentions []feishu.Mention
		want     string
	}{
		{"text with mentions", "text", `{"text":"@_user_2 @_user_1 已重启 db-1"}`, []feishu.Mention{bob, bot}, "@李四 已重启 db-1"},
		{"bot mention in the middle", "text", `{"text":"done @_user_2 thanks"}`, []feishu.Mention{bot}, "done thanks"},
		{"link kept", "text", `{"text":"see [runbook](https://wiki/x)"}`, nil, "see [runbook](https://wiki/x)"},
		{"at all", "text", `{"text":"@_all heads up"}`, nil, "@all heads up"},
		{"ten mentions", "text", `{"text":"@_user_10 and @_user_1"}`, []feishu.Mention{
			{Key: "@_user_1", Name: "One"}, {Key: "@_user_10", Name: "Ten"}}, "@Ten and @One"},
		{"post", "post", `{"title":"Root cause","content":[[{"tag":"text","text":"disk "},{"tag":"at","user_id":"@_user_1","user_name":"李四"},{"tag":"a","text":"graph","href":"https://g/1"}],[{"tag":"img","image_key":"img_1"},{"tag":"code_block","language":"sh","text":"df -h  /"}]]}`,
			[]feishu.Mention{bob}, "Root cause\ndisk @李四graph (https://g/1)\n[image]\ndf -h  /"},
		{"post wrapped in a locale", "post", `{"zh_cn":{"title":"","content":[[{"tag":"text","text":"已处理"}]]}}`, nil, "已处理"},
		{"image", "image", `{"image_key":"img_1"}`, nil, "[image]"},
		{"file", "file", `{"file_key":"f","file_name":"dump.log"}`, nil, "[file: dump.log]"},
		{"sticker", "sticker", `{}`, nil, "[sticker]"},
		{"broken text", "text", `{"text":`, nil, "[text]"},
		{"broken post", "post", `[1,2]`, nil, "[post]"},
		{"unknown type", "hongbao", `{}`, nil, "[hongbao]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := messageText(feishu.Message{MessageType: tt.typ, Content: tt.content, Mentions: tt.mentions}, testBotID)
			if got != tt.want {
				t.Errorf("messageText = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		text      string
		addressed bool
		want      command
	}{
		{"help", true, command{kind: cmdHelp}},
		{"帮助", true, command{kind: cmdHelp}},
		{"help", false, command{}},
		{"Resolve", true, command{kind: cmdResolve}},
		{"pending!", true, command{kind: cmdPending}},
		{"reopen", true, command{kind: cmdReopen}},
		{"#issue_abc-1#已重启", true, command{kind: cmdCompat, issueUUID: "issue_abc-1", text: "已重启"}},
		{"fyi #issue_x# done  ", true, command{kind: cmdCompat, issueUUID: "issue_x", text: "done"}},
		{"#issue_x#done", false, command{}},
		{"please help me", true, command{}},
		{"", true, command{}},
	}
	for _, tt := range tests {
		if got := parseCommand(tt.text, tt.addressed); got != tt.want {
			t.Errorf("parseCommand(%q, %v) = %+v, want %+v", tt.text, tt.addressed, got, tt.want)
		}
	}
	if !isPrivate("  // note to self") || isPrivate("a // b") {
		t.Error("isPrivate misreads // remarks")
	}
}

func TestReplyContentTruncated(t *testing.T) {
	got := replyContent("张三", strings.Repeat("长", 70000))
	if n := utf8.RuneCountInString(got); n > 65535 {
		t.Errorf("reply has %d runes, limit 65535", n)
	}
	if !strings.HasPrefix(got, "[飞书] 张三: 长") || !strings.HasSuffix(got, "truncated）") {
		t.Errorf("reply starts %q ends %q", got[:20], got[len(got)-20:])
	}
}

// FuzzMessageText feeds arbitrary content to the parser for every message type: it
// must not panic, and must return valid UTF-8 when given it.
func FuzzMessageText(f *testing.F) {
	seeds := []struct{ typ, content string }{
		{"text", `{"text":"@_user_1 已重启 db-1 @_user_2"}`},
		{"text", `{"text":"see [runbook](https://wiki/x) @_all"}`},
		{"post", `{"title":"t","content":[[{"tag":"text","text":"a"},{"tag":"at","user_id":"@_user_1","user_name":"B"},{"tag":"a","text":"l","href":"https://x"},{"tag":"img","image_key":"i"},{"tag":"emotion","emoji_type":"SMILE"},{"tag":"code_block","text":"x"},{"tag":"hr"},{"tag":"md","text":"**b**"}]]}`},
		{"post", `{"zh_cn":{"title":"标题","content":[[{"tag":"text","text":"正文"}]]}}`},
		{"post", `{"en_us":{"content":[[{"tag":"media","file_key":"f"}]]}}`},
		{"file", `{"file_name":"a.log"}`},
		{"image", `{}`},
		{"text", `{"text":`},
	}
	for _, s := range seeds {
		f.Add(s.typ, s.content)
	}
	mentions := []feishu.Mention{{Key: "@_user_1", OpenID: "ou_b", Name: "B"}, {Key: "@_user_2", OpenID: testBotID, Name: "bot"}}
	f.Fuzz(func(t *testing.T, typ, content string) {
		got := messageText(feishu.Message{MessageType: typ, Content: content, Mentions: mentions}, testBotID)
		if utf8.ValidString(typ) && utf8.ValidString(content) && !utf8.ValidString(got) {
			t.Errorf("invalid UTF-8 output %q", got)
		}
		_ = parseCommand(got, true)
	})
}
