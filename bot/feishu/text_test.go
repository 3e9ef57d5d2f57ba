package feishu

import "testing"

const testBotID = "ou_bot"

func TestMessageText(t *testing.T) {
	bob := Mention{Key: "@_user_1", OpenID: "ou_bob", Name: "李四"}
	bot := Mention{Key: "@_user_2", OpenID: testBotID, Name: "issuebot"}
	tests := []struct {
		name     string
		typ      string
		content  string
		mentions []Mention
		want     string
	}{
		{"text with mentions", "text", `{"text":"@_user_2 @_user_1 已重启 db-1"}`, []Mention{bob, bot}, "@李四 已重启 db-1"},
		{"bot mention in the middle", "text", `{"text":"done @_user_2 thanks"}`, []Mention{bot}, "done thanks"},
		{"link kept", "text", `{"text":"see [runbook](https://wiki/x)"}`, nil, "see [runbook](https://wiki/x)"},
		{"at all", "text", `{"text":"@_all heads up"}`, nil, "@all heads up"},
		{"ten mentions", "text", `{"text":"@_user_10 and @_user_1"}`, []Mention{
			{Key: "@_user_1", Name: "One"}, {Key: "@_user_10", Name: "Ten"}}, "@Ten and @One"},
		{"post", "post", `{"title":"Root cause","content":[[{"tag":"text","text":"disk "},{"tag":"at","user_id":"@_user_1","user_name":"李四"},{"tag":"a","text":"graph","href":"https://g/1"}],[{"tag":"img","image_key":"img_1"},{"tag":"code_block","language":"sh","text":"df -h  /"}]]}`,
			[]Mention{bob}, "Root cause\ndisk @李四graph (https://g/1)\n[image]\ndf -h  /"},
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
			got := Message{MessageType: tt.typ, Content: tt.content, Mentions: tt.mentions}.Text(testBotID)
			if got != tt.want {
				t.Errorf("Text = %q, want %q", got, tt.want)
			}
		})
	}
}
