package bot

import (
	"strings"
	"testing"
	"unicode/utf8"

	"issuebot/bot/feishu"
)

const testBotID = "ou_bot"

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
		{"list", true, command{kind: cmdList}},
		{"bind", true, command{kind: cmdBind}},
		{"bind sre", true, command{kind: cmdBind, text: "sre"}},
		{"BIND  sre   p1", true, command{kind: cmdBind, text: "sre p1"}},
		{"bind sre P9", true, command{kind: cmdBind, text: "sre P9"}}, // answered with the usage
		{"bind the new replica first", true, command{}},
		{"unbind", true, command{kind: cmdUnbind}},
		{"解绑 db", true, command{kind: cmdUnbind, text: "db"}},
		{"unbind the old replica first", true, command{}},
		{"bind sre", false, command{}},
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
	got := replyContent("张三", "", strings.Repeat("长", 70000))
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
		got := feishu.Message{MessageType: typ, Content: content, Mentions: mentions}.Text(testBotID)
		if utf8.ValidString(typ) && utf8.ValidString(content) && !utf8.ValidString(got) {
			t.Errorf("invalid UTF-8 output %q", got)
		}
		_ = parseCommand(got, true)
	})
}
