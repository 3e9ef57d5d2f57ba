package guance

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// docReplyList is the reply/list answer of reference §2.11
// (zh/open-api/issue/getissuereplylist.md), pageInfo at the top level.
const docReplyList = `{"code":200,"content":[{
  "attachmentsList": [], "content": "成员创建了Issue。", "type": "change",
  "createAt": 1690278285, "updateAt": 1690278285, "deleteAt": -1,
  "creator": "acnt_349e",
  "creatorInfo": {"acntWsNickname": "", "email": "88@qq.com", "iconUrl": "http://x.png", "name": "88测试", "username": "测试"},
  "updator": "acnt_349e", "updatorInfo": {"…": "…"},
  "extend": {}, "id": 313186, "is_modify": false, "latest_modify_time": 1690278285,
  "issueUUID": "issue_db66", "status": 0,
  "uuid": "repim_1c64", "workspaceUUID": "wksp_6310"
},{
  "content": "<p>edited</p>", "type": "reply", "createAt": 1690278300.5, "updateAt": null, "deleteAt": null,
  "creator": "wsak_bot", "creatorInfo": null, "extend": {"text": "edited"}, "id": null,
  "is_modify": 1, "latest_modify_time": "1690278400", "issueUUID": "issue_db66", "uuid": "repim_2"
}],"errorCode":"","message":"","pageInfo":{"count":2,"pageIndex":1,"pageSize":10,"totalCount":2},"success":true,"traceId":"1"}`

func TestListReplies(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue/reply/issue_db66/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "GET")
		testBody(t, r, "")
		if got, want := r.URL.RawQuery, "ordering=-createAt&pageIndex=1&pageSize=10"; got != want {
			t.Errorf("query = %q, want %q", got, want)
		}
		reply(w, 200, docReplyList)
	})
	replies, pi, err := c.ListReplies(t.Context(), "issue_db66", ReplyListOptions{PageSize: 10})
	if err != nil {
		t.Fatalf("ListReplies: %v", err)
	}
	want := []Reply{{
		UUID: "repim_1c64", IssueUUID: "issue_db66", Type: "change", Content: "成员创建了Issue。",
		Creator: "acnt_349e", CreatorInfo: &UserInfo{Name: "88测试", Email: "88@qq.com", Username: "测试"},
		CreateAt: 1690278285, UpdateAt: 1690278285, LatestModifyTime: 1690278285,
	}, {
		UUID: "repim_2", IssueUUID: "issue_db66", Type: "reply", Content: "<p>edited</p>",
		Creator: "wsak_bot", CreateAt: 1690278300, IsModify: true, LatestModifyTime: 1690278400,
		Extend: Extend{Text: "edited"},
	}}
	if diff := cmp.Diff(want, replies, ignoreRaw); diff != "" {
		t.Errorf("ListReplies mismatch (-want +got):\n%s", diff)
	}
	if want := (PageInfo{Count: 2, PageIndex: 1, PageSize: 10, TotalCount: 2}); pi != want {
		t.Errorf("PageInfo = %+v, want %+v", pi, want)
	}
	if replies[0].ByAPIKey() || !replies[1].ByAPIKey() {
		t.Errorf("ByAPIKey = %v, %v; want false, true", replies[0].ByAPIKey(), replies[1].ByAPIKey())
	}
}

func TestListReplies_options(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue/reply/i/list", func(w http.ResponseWriter, r *http.Request) {
		if got, want := r.URL.RawQuery, "ordering=createAt&pageIndex=3&pageSize=20"; got != want {
			t.Errorf("query = %q, want %q", got, want)
		}
		// No pageInfo at all: the client fills in what it asked for.
		reply(w, 200, ok(`[]`))
	})
	replies, pi, err := c.ListReplies(t.Context(), "i", ReplyListOptions{Ordering: "createAt", PageIndex: 3})
	if err != nil || len(replies) != 0 {
		t.Fatalf("ListReplies = %v, %v", replies, err)
	}
	if want := (PageInfo{PageIndex: 3, PageSize: 20}); pi != want {
		t.Errorf("PageInfo = %+v, want %+v", pi, want)
	}
}

func TestCreateReply(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/reply/create", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		testBody(t, r, `{"issueUUID":"issue_a3c3","content":"[飞书] 张三: 已重启 \u003cdb-1\u003e","attachmentUuids":[],"extend":{"text":"[飞书] 张三: 已重启 \u003cdb-1\u003e"}}`)
		// The create answer of reference §2.11: id null, no creatorInfo.
		reply(w, 200, ok(`{"content":"aaa","createAt":1690810887,"creator":"acnt_349e","deleteAt":-1,
 "extend":{"channels":[],"linkList":[],"members":[]},"id":null,"issueUUID":"issue_a3c3",
 "status":0,"type":"reply","updateAt":1690810887,"updator":"acnt_349e",
 "uuid":"repim_7326","workspaceUUID":"wksp_a7ba"}`))
	})
	got, err := c.CreateReply(t.Context(), "issue_a3c3", "[飞书] 张三: 已重启 <db-1>")
	if err != nil {
		t.Fatalf("CreateReply: %v", err)
	}
	want := &Reply{
		UUID: "repim_7326", IssueUUID: "issue_a3c3", Type: "reply", Content: "aaa", Creator: "acnt_349e",
		CreateAt: 1690810887, UpdateAt: 1690810887,
		Extend: Extend{Raw: json.RawMessage(`{"channels":[],"linkList":[],"members":[]}`)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CreateReply mismatch (-want +got):\n%s", diff)
	}
}

// TestCreateReply_acceptedWithoutReply checks that a success envelope without a readable
// reply is a success: reporting an error would make the caller post the reply again.
func TestCreateReply_acceptedWithoutReply(t *testing.T) {
	for name, content := range map[string]string{"Null": `null`, "Missing": ``, "NotAnObject": `"ok"`} {
		t.Run(name, func(t *testing.T) {
			c, mux, _ := setup(t)
			mux.HandleFunc("POST /api/v1/issue/reply/create", func(w http.ResponseWriter, r *http.Request) {
				body := `{"code":200,"errorCode":"","message":"","success":true,"traceId":"t1"}`
				if content != "" {
					body = `{"code":200,"content":` + content + `,"errorCode":"","message":"","success":true,"traceId":"t1"}`
				}
				reply(w, 200, body)
			})
			got, err := c.CreateReply(t.Context(), "issue_1", "hello")
			if err != nil {
				t.Fatalf("CreateReply: %v", err)
			}
			want := &Reply{IssueUUID: "issue_1", Type: "reply", Content: "hello"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("CreateReply mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCreateReply_tooLong(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/reply/create", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, ok(`{"uuid":"repim_1"}`))
	})
	if _, err := c.CreateReply(t.Context(), "i", strings.Repeat("字", MaxReplyRunes)); err != nil {
		t.Errorf("CreateReply(%d runes): %v", MaxReplyRunes, err)
	}
	if _, err := c.CreateReply(t.Context(), "i", strings.Repeat("字", MaxReplyRunes+1)); err == nil {
		t.Errorf("CreateReply(%d runes): no error", MaxReplyRunes+1)
	}
	if _, err := c.CreateReply(t.Context(), "", "x"); err == nil {
		t.Errorf("CreateReply with no issue: no error")
	}
}
