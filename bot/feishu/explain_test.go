package feishu_test

import (
	"strings"
	"testing"

	"issuebot/bot/feishu"
)

func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		code int
		want string // a part of the explanation
	}{
		{99991663, "tenant access token is invalid"},
		{99991661, "no access token"},
		{99991400, "rate-limited the app"},
		{99991672, "lacks a permission scope"},
		{10003, "app id"},
		{10014, "app secret"},
		{230002, "not a member of the chat"},
		{230020, "5 messages a second"},
		{230099, "card's content"},
		{230006, "bot ability is off"},
		{230027, "lacks a permission scope"},
		{232011, "not a member of the chat"},
	} {
		if got := feishu.Explain(tc.code); !strings.Contains(got, tc.want) {
			t.Errorf("Explain(%d) = %q, want it to contain %q", tc.code, got, tc.want)
		}
	}
	if got := feishu.Explain(123456); !strings.Contains(got, "123456") || !strings.Contains(got, "log_id") {
		t.Errorf("Explain(unknown) = %q, want a generic text naming the code", got)
	}
}
