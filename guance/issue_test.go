package guance

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// docListRow is the issue/list row of reference §2.11 (zh/open-api/issue/list.md):
// HTML description, extend, integer level 2.
const docListRow = `{
  "createAt": 1690424627, "updateAt": 1690424680, "deleteAt": -1,
  "creator": "acnt_xxxx32",
  "creatorInfo": {"acntWsNickname": "", "email": "962584902@qq.com", "iconUrl": "", "name": "kj1", "username": "962584902@qq.com"},
  "updator": "acnt_xxxx32",
  "updatorInfo": {"acntWsNickname": "", "email": "962584902@qq.com", "iconUrl": "", "name": "kj1", "username": "962584902@qq.com"},
  "description": "<span><span data-at-embedded=\"\" data-insert-by=\"@\" data-info=\"{&quot;item&quot;:{&quot;uuid&quot;:&quot;acnt_xxxx32&quot;}}\" contenteditable=\"false\">&nbsp;<span class=\"key-word\">@jiangyd@jiagouyun.com</span>&nbsp;</span><span data-at-embedded=\"\" data-insert-by=\"#\" data-info=\"{&quot;item&quot;:{&quot;uuid&quot;:&quot;chan_xxxx32&quot;}}\" contenteditable=\"false\">&nbsp;<span class=\"key-word\">#jjj</span>&nbsp;</span>nn</span>",
  "extend": {
    "channels": [{"exists": true, "type": "#", "uuid": "chan_xxxx32"}],
    "members":  [{"exists": true, "type": "@", "uuid": "acnt_xxxx32"}],
    "sourceLink": "/tracing/service/table?leftActiveKey=Tracing&activeName=LinkToTrackService&w=wksp_xxxx32&time=15m",
    "text": "@jiangyd@jiagouyun.com  #jjj nn"
  },
  "id": 108010, "level": 2, "name": "bbbb",
  "resource": "APM-http://testing-ft2x-saas.cloudcare.cn/tracing/service/table?leftActiveKey=Tracing&activeName=LinkToTrackService&w=wksp_xxxx32&time=15m",
  "resourceType": "viewer", "resourceUUID": "",
  "status": 0, "statusType": 30, "subIdentify": "",
  "uuid": "issue_xxxx32", "workspaceUUID": "wksp_xxxx32"
}`

// docGetIssue is the issue/get content of reference §2.11 (zh/open-api/issue/get.md):
// levelInfo, managerInfos, a wsak_ creator.
const docGetIssue = `{
  "attachments": [{"fileName": "im:age.png", "fileSuffix": "png", "uuid": "att_eaf3"}],
  "bindChannels": [{"name": "default", "uuid": "chan_4455"}],
  "createAt": 1714113844, "updateAt": 1716888575, "deleteAt": -1,
  "creator": "wsak_7369",
  "creatorInfo": {"email": "wsak_7369", "name": "接口测试", "username": "wsak_7369", "uuid": "wsak_7369", "acntWsNickname": "", "iconUrl": ""},
  "updator": "acnt_349e", "updatorInfo": {"…": "…"},
  "declaration": {"business": "", "organization": "66013f10dae37200078d0fcd"},
  "description": "kong",
  "extend": {"manager": ["group_d8b2", "acnt_349e", "jj@qq.com"]},
  "id": 212982, "level": "system_level_3", "levelInfo": {"color": "#C9C9C9", "name": "未知"},
  "managerInfos": [
    {"name": "team-pass", "uuid": "group_d8b2"},
    {"acntWsNickname": "", "email": "88@qq.com", "iconUrl": "http://x/acnt_349e.png", "name": "88测试", "username": "测试", "uuid": "acnt_349e"},
    {"email": "jj@qq.com", "name": "jj@qq.com"}
  ],
  "name": "上传", "resource": "", "resourceType": "", "resourceUUID": "",
  "status": 0, "statusType": 10, "subIdentify": "",
  "uuid": "issue_7572", "workspaceUUID": "wksp_1776"
}`

// wantDocListRow is docListRow decoded.
func wantDocListRow() Issue {
	kj1 := &UserInfo{Name: "kj1", Email: "962584902@qq.com", Username: "962584902@qq.com"}
	return Issue{
		UUID:         "issue_xxxx32",
		Name:         "bbbb",
		Description:  `<span><span data-at-embedded="" data-insert-by="@" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;acnt_xxxx32&quot;}}" contenteditable="false">&nbsp;<span class="key-word">@jiangyd@jiagouyun.com</span>&nbsp;</span><span data-at-embedded="" data-insert-by="#" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;chan_xxxx32&quot;}}" contenteditable="false">&nbsp;<span class="key-word">#jjj</span>&nbsp;</span>nn</span>`,
		Level:        "system_level_2",
		StatusType:   StatusPending,
		Resource:     "APM-http://testing-ft2x-saas.cloudcare.cn/tracing/service/table?leftActiveKey=Tracing&activeName=LinkToTrackService&w=wksp_xxxx32&time=15m",
		ResourceType: "viewer",
		Creator:      "acnt_xxxx32", CreatorInfo: kj1,
		Updator: "acnt_xxxx32", UpdatorInfo: kj1,
		WorkspaceUUID: "wksp_xxxx32",
		CreateAt:      1690424627, UpdateAt: 1690424680, DeleteAt: 0,
		Extend: Extend{
			Text:       "@jiangyd@jiagouyun.com  #jjj nn",
			SourceLink: "/tracing/service/table?leftActiveKey=Tracing&activeName=LinkToTrackService&w=wksp_xxxx32&time=15m",
			Channels:   []string{"chan_xxxx32"},
		},
	}
}

// ignoreRaw leaves Extend.Raw out of comparisons; tests check it separately.
var ignoreRaw = cmp.Transformer("noRaw", func(e Extend) Extend { e.Raw = nil; return e })

func TestListIssues(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		testBody(t, r, `{"channelUUID":"chan_default","startTime":1690424000,"endTime":1690425000,"search":"db","filters":[{"key":"statusType","value":20,"equal":false}],"pageIndex":2,"pageSize":50}`)
		reply(w, 200, ok(`{"data":[`+docListRow+`],"pageInfo":{"count":1,"pageIndex":2,"pageSize":50,"totalCount":51}}`))
	})
	issues, pi, err := c.ListIssues(t.Context(), IssueQuery{
		ChannelUUID: "chan_default",
		Start:       time.Unix(1690424000, 0),
		End:         time.Unix(1690425000, 0),
		Search:      "db",
		Filters:     []Filter{{Key: "statusType", Value: StatusResolved, Equal: false}},
		PageIndex:   2,
		PageSize:    50,
	})
	if err != nil {
		t.Fatalf("ListIssues: %v", err)
	}
	if diff := cmp.Diff([]Issue{wantDocListRow()}, issues, ignoreRaw); diff != "" {
		t.Errorf("ListIssues mismatch (-want +got):\n%s", diff)
	}
	if want := (PageInfo{Count: 1, PageIndex: 2, PageSize: 50, TotalCount: 51}); pi != want {
		t.Errorf("PageInfo = %+v, want %+v", pi, want)
	}
	var ext map[string]any
	if err := json.Unmarshal(issues[0].Extend.Raw, &ext); err != nil || len(ext["members"].([]any)) != 1 {
		t.Errorf("Extend.Raw = %s, want the whole extend object", issues[0].Extend.Raw)
	}
	if got, want := issues[0].Text(), "@jiangyd@jiagouyun.com  #jjj nn"; got != want {
		t.Errorf("Text() = %q, want %q", got, want)
	}
	if issues[0].Deleted() {
		t.Errorf("Deleted() = true for deleteAt -1")
	}
}

func TestListIssues_defaults(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		testBody(t, r, `{"search":"","filters":[],"pageIndex":1,"pageSize":100}`)
		reply(w, 200, ok(`{"data":[],"pageInfo":{"count":0,"pageIndex":1,"pageSize":100,"totalCount":0}}`))
	})
	issues, _, err := c.ListIssues(t.Context(), IssueQuery{})
	if err != nil || len(issues) != 0 {
		t.Fatalf("ListIssues = %v, %v; want no issues", issues, err)
	}
}

func TestListIssues_pageSizeCapped(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		testBody(t, r, `{"search":"","filters":[],"pageIndex":1,"pageSize":100}`)
		reply(w, 200, ok(`{"data":[],"pageInfo":{"count":0,"pageIndex":1,"pageSize":100,"totalCount":0}}`))
	})
	if _, _, err := c.ListIssues(t.Context(), IssueQuery{PageSize: 500}); err != nil {
		t.Fatalf("ListIssues: %v", err)
	}
}

func TestListIssues_bareArray(t *testing.T) {
	c, mux, _ := setup(t)
	// Content as a bare array (as Guance's own scripts read it), with odd types: times as
	// float, null and string, level null, id null, success missing.
	row := `{"uuid":"issue_b","name":"n","level":null,"statusType":"10","id":null,
		"createAt":1686397319.9216194,"updateAt":null,"deleteAt":"1690000000","extend":null}`
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		reply(w, 200, `{"code":200,"content":[`+docListRow+`,`+row+`],"traceId":"1"}`)
	})
	issues, pi, err := c.ListIssues(t.Context(), IssueQuery{ChannelUUID: "chan_x", PageSize: 20})
	if err != nil {
		t.Fatalf("ListIssues: %v", err)
	}
	want := []Issue{wantDocListRow(), {
		UUID: "issue_b", Name: "n", StatusType: StatusOpen, CreateAt: 1686397319, DeleteAt: 1690000000,
	}}
	if diff := cmp.Diff(want, issues, ignoreRaw); diff != "" {
		t.Errorf("ListIssues mismatch (-want +got):\n%s", diff)
	}
	if want := (PageInfo{Count: 2, PageIndex: 1, PageSize: 20}); pi != want {
		t.Errorf("PageInfo = %+v, want %+v", pi, want)
	}
	if !issues[1].Deleted() {
		t.Errorf("Deleted() = false for deleteAt > 0")
	}
	if issues[1].Extend.Raw != nil {
		t.Errorf("Extend.Raw = %s for null extend, want nil", issues[1].Extend.Raw)
	}
}

// issueRow returns a minimal issue/list row.
func issueRow(uuid string) string {
	return fmt.Sprintf(`{"uuid":%q,"name":%q,"level":"system_level_1","statusType":10,"createAt":1700000000,"updateAt":1700000000,"deleteAt":-1,"extend":{}}`, uuid, uuid)
}

func TestListAllIssues(t *testing.T) {
	c, mux, _ := setup(t)
	// Three pages of 2; an insert between page 1 and 2 shifted issue_2 onto page 2.
	pages := map[int]string{
		1: issueRow("issue_1") + "," + issueRow("issue_2"),
		2: issueRow("issue_2") + "," + issueRow("issue_3"),
		3: issueRow("issue_4"),
	}
	var seen []int
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		var req struct{ PageIndex, PageSize int }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, req.PageIndex)
		if req.PageSize != 2 {
			t.Errorf("pageSize = %d, want 2", req.PageSize)
		}
		reply(w, 200, ok(fmt.Sprintf(`{"data":[%s],"pageInfo":{"count":2,"pageIndex":%d,"pageSize":2,"totalCount":6}}`, pages[req.PageIndex], req.PageIndex)))
	})
	issues, err := c.ListAllIssues(t.Context(), IssueQuery{ChannelUUID: "chan_default", PageSize: 2})
	if err != nil {
		t.Fatalf("ListAllIssues: %v", err)
	}
	var got []string
	for _, is := range issues {
		got = append(got, is.UUID)
	}
	if diff := cmp.Diff([]string{"issue_1", "issue_2", "issue_3", "issue_4"}, got); diff != "" {
		t.Errorf("uuids mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1, 2, 3}, seen); diff != "" {
		t.Errorf("pages requested mismatch (-want +got):\n%s", diff)
	}
}

func TestListAllIssues_stops(t *testing.T) {
	tests := []struct {
		name      string
		page      func(i int) string
		wantPages int
	}{
		{"TotalCount", func(i int) string {
			return fmt.Sprintf(`{"data":[%s],"pageInfo":{"count":1,"pageIndex":%d,"pageSize":1,"totalCount":2}}`, issueRow(fmt.Sprint("issue_", i)), i)
		}, 2},
		{"EmptyPage", func(i int) string {
			if i == 3 {
				return `{"data":[],"pageInfo":{"count":0,"pageIndex":3,"pageSize":1,"totalCount":0}}`
			}
			return `[` + issueRow(fmt.Sprint("issue_", i)) + `]`
		}, 3},
		{"ServerIgnoresPageIndex", func(i int) string { return `[` + issueRow("issue_same") + `]` }, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, mux, _ := setup(t)
			calls := 0
			mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
				calls++
				reply(w, 200, ok(tt.page(calls)))
			})
			if _, err := c.ListAllIssues(t.Context(), IssueQuery{PageSize: 1}); err != nil {
				t.Fatalf("ListAllIssues: %v", err)
			}
			if calls != tt.wantPages {
				t.Errorf("requests = %d, want %d", calls, tt.wantPages)
			}
		})
	}
}

func TestListAllIssues_error(t *testing.T) {
	c, mux, _ := setup(t)
	calls := 0
	mux.HandleFunc("POST /api/v1/issue/list", func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 2 {
			reply(w, 503, `{"code":503,"errorCode":"InternalError","success":false}`)
			return
		}
		reply(w, 200, ok(`[`+issueRow(fmt.Sprint("issue_", calls))+`]`))
	})
	_, err := c.ListAllIssues(t.Context(), IssueQuery{PageSize: 1})
	if !Retryable(err) {
		t.Errorf("ListAllIssues error = %v, want a retryable error", err)
	}
}

func TestGetIssue(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue/issue_7572/get", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "GET")
		testBody(t, r, "")
		reply(w, 200, ok(docGetIssue))
	})
	got, err := c.GetIssue(t.Context(), "issue_7572")
	if err != nil {
		t.Fatalf("GetIssue: %v", err)
	}
	want := &Issue{
		UUID: "issue_7572", Name: "上传", Description: "kong", Level: "system_level_3", StatusType: StatusOpen,
		Creator:     "wsak_7369",
		CreatorInfo: &UserInfo{UUID: "wsak_7369", Name: "接口测试", Email: "wsak_7369", Username: "wsak_7369"},
		Updator:     "acnt_349e", UpdatorInfo: &UserInfo{},
		WorkspaceUUID: "wksp_1776",
		CreateAt:      1714113844, UpdateAt: 1716888575,
		Extend: Extend{Raw: json.RawMessage(`{"manager": ["group_d8b2", "acnt_349e", "jj@qq.com"]}`)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetIssue mismatch (-want +got):\n%s", diff)
	}
	if got.Text() != "" {
		t.Errorf("Text() = %q, want empty", got.Text())
	}
}

func TestGetIssue_notFound(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue/issue_gone/get", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 404, `{"code":404,"content":null,"errorCode":"ft.NotFound","message":"无权限访问数据或找不到操作对象","success":false,"traceId":"5"}`)
	})
	mux.HandleFunc("GET /api/v1/issue/issue_null/get", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, ok(`null`))
	})
	for _, id := range []string{"issue_gone", "issue_null"} {
		if _, err := c.GetIssue(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetIssue(%s) error = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := c.GetIssue(t.Context(), " "); err == nil {
		t.Errorf("GetIssue with empty uuid: no error")
	}
}

func TestGetIssue_escapesUUID(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("GET /api/v1/issue/{id}/get", func(w http.ResponseWriter, r *http.Request) {
		if got := r.PathValue("id"); got != "a/b?c" {
			t.Errorf("id = %q, want %q", got, "a/b?c")
		}
		reply(w, 200, ok(`{"uuid":"a/b?c"}`))
	})
	if _, err := c.GetIssue(t.Context(), "a/b?c"); err != nil {
		t.Fatalf("GetIssue: %v", err)
	}
}

func TestSetStatus(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/issue_xxxx32/modify", func(w http.ResponseWriter, r *http.Request) {
		testRequest(t, r, "POST")
		testBody(t, r, `{"statusType":20}`)
		reply(w, 200, ok(docListRow))
	})
	got, err := c.SetStatus(t.Context(), "issue_xxxx32", StatusResolved)
	if err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	want := wantDocListRow()
	if diff := cmp.Diff(&want, got, ignoreRaw); diff != "" {
		t.Errorf("SetStatus mismatch (-want +got):\n%s", diff)
	}
}

func TestSetStatus_noIssueInAnswer(t *testing.T) {
	c, mux, _ := setup(t)
	mux.HandleFunc("POST /api/v1/issue/i/modify", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, ok(`true`))
	})
	got, err := c.SetStatus(t.Context(), "i", StatusPending)
	if err != nil || got != nil {
		t.Errorf("SetStatus = %v, %v; want nil, nil", got, err)
	}
	if _, err := c.SetStatus(t.Context(), "i", 0); err == nil {
		t.Errorf("SetStatus(0): no error")
	}
}

func TestStatusType_String(t *testing.T) {
	for st, want := range map[StatusType]string{
		StatusOpen: "Open", StatusWorking: "Working", StatusResolved: "Resolved",
		StatusClosed: "Closed", StatusPending: "Pending", 99: "status(99)",
	} {
		if got := st.String(); got != want {
			t.Errorf("StatusType(%d).String() = %q, want %q", int(st), got, want)
		}
	}
}

func TestLevelRef_UnmarshalJSON(t *testing.T) {
	tests := []struct {
		in   string
		want LevelRef
	}{
		{`"system_level_2"`, "system_level_2"},
		{`"issl_abc"`, "issl_abc"},
		{`""`, ""},
		{`null`, ""},
		{`0`, "system_level_0"},
		{`3`, "system_level_3"},
		{`2.0`, "system_level_2"},
		{`"1"`, "system_level_1"},
		{`-1`, ""},
	}
	for _, tt := range tests {
		var got LevelRef
		if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Unmarshal(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var l LevelRef
	if err := json.Unmarshal([]byte(`{}`), &l); err == nil {
		t.Errorf("Unmarshal({}) = nil error, want one")
	}
}

func TestExtend_roundTrip(t *testing.T) {
	var e Extend
	in := `{"text":"t","sourceLink":"/x","members":[]}`
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e)
	if err != nil || string(b) != in {
		t.Errorf("Marshal = %s, %v; want %s", b, err, in)
	}
	b, err = json.Marshal(Extend{Text: "hi"})
	if err != nil || string(b) != `{"text":"hi"}` {
		t.Errorf("Marshal(no raw) = %s, %v", b, err)
	}
	// An odd type under a known key keeps the raw object and does not fail the issue.
	if err := json.Unmarshal([]byte(`{"text":{"x":1}}`), &e); err != nil || e.Text != "" || e.Raw == nil {
		t.Errorf("Unmarshal odd text = %+v, %v", e, err)
	}
}
