package guancetest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"issuebot/guance/guancetest"
)

// clock is a settable clock for the fake.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1700000000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// answer is a decoded envelope.
type answer struct {
	Status    int
	Code      int             `json:"code"`
	Content   json.RawMessage `json:"content"`
	PageInfo  json.RawMessage `json:"pageInfo"`
	ErrorCode string          `json:"errorCode"`
	Message   string          `json:"message"`
	Success   bool            `json:"success"`
	TraceID   string          `json:"traceId"`
}

// call sends a raw request with the server's key.
func call(t *testing.T, s *guancetest.Server, method, path, body string) answer {
	t.Helper()
	return callKey(t, s, s.APIKey, method, path, body)
}

func callKey(t *testing.T, s *guancetest.Server, key, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("DF-API-KEY", key)
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type = %q", method, path, ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
	}
	if a.TraceID == "" && resp.Header.Get("X-Trace-Id") == "" {
		t.Errorf("%s %s: no traceId", method, path)
	}
	return a
}

// listPage is issue/list content.
type listPage struct {
	Data     []guancetest.Issue  `json:"data"`
	PageInfo guancetest.PageInfo `json:"pageInfo"`
}

// list calls issue/list and returns the uuids of the page.
func list(t *testing.T, s *guancetest.Server, body string) ([]string, guancetest.PageInfo) {
	t.Helper()
	a := call(t, s, "POST", "/api/v1/issue/list", body)
	if a.Status != 200 {
		t.Fatalf("issue/list %s: %d %s %s", body, a.Status, a.ErrorCode, a.Message)
	}
	var p listPage
	if err := json.Unmarshal(a.Content, &p); err != nil {
		t.Fatalf("decode content: %v", err)
	}
	var ids []string
	for _, is := range p.Data {
		ids = append(ids, is.UUID)
	}
	return ids, p.PageInfo
}

func sorted(xs []string) []string {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs
}

func TestServer_throttle(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	for i := range 20 {
		if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 200 {
			t.Fatalf("request %d: %d %s", i+1, a.Status, a.ErrorCode)
		}
		clk.Advance(time.Second)
	}
	a := call(t, s, "GET", "/api/v1/channel/quick_list", "")
	if a.Status != 401 || a.Code != 401 || a.ErrorCode != "ft.TriggerApiAkCurrentLimiting" || a.Success || string(a.Content) != "null" {
		t.Errorf("21st request = %+v, want Guance's 401 throttle", a)
	}
	if got := s.Throttled(); got != 1 {
		t.Errorf("Throttled() = %d, want 1", got)
	}
	if got := s.MaxInWindow(time.Minute); got != 21 {
		t.Errorf("MaxInWindow(1m) = %d, want 21", got)
	}
	if got := s.MaxInWindow(10 * time.Second); got != 10 {
		t.Errorf("MaxInWindow(10s) = %d, want 10", got)
	}
	// The window slides: a minute after the first request there is room for one more.
	clk.Advance(40 * time.Second)
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 200 {
		t.Errorf("after the window slid: %d %s", a.Status, a.ErrorCode)
	}
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 401 {
		t.Errorf("second after the window slid: %d, want 401", a.Status)
	}
	reqs := s.Requests()
	if len(reqs) != 23 || reqs[20].Status != 401 || reqs[0].Path != "/api/v1/channel/quick_list" || reqs[0].Method != "GET" {
		t.Errorf("Requests() = %+v", reqs)
	}
}

func TestServer_limitConfigurable(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now), guancetest.WithLimit(2, time.Second))
	for range 2 {
		call(t, s, "GET", "/api/v1/issue-level/list", "")
	}
	if a := call(t, s, "GET", "/api/v1/issue-level/list", ""); a.Status != 401 {
		t.Errorf("3rd request = %d, want 401", a.Status)
	}
	clk.Advance(time.Second)
	if a := call(t, s, "GET", "/api/v1/issue-level/list", ""); a.Status != 200 {
		t.Errorf("after 1s = %d, want 200", a.Status)
	}
}

func TestServer_badKey(t *testing.T) {
	s := guancetest.NewServer(t)
	a := callKey(t, s, "wrong", "GET", "/api/v1/channel/quick_list", "")
	if a.Status != 403 || a.ErrorCode != "ft.InvalidAPIKey" {
		t.Errorf("bad key = %d %s, want 403 ft.InvalidAPIKey", a.Status, a.ErrorCode)
	}
	if s.APIKey != guancetest.DefaultAPIKey || s.KeyID != "wsak_bot0001" {
		t.Errorf("defaults = %q %q", s.APIKey, s.KeyID)
	}
}

func TestServer_issueShape(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	ops := s.AddChannel("ops")
	is := s.AddIssue(guancetest.IssueSpec{
		Name: "db down", Description: "<span>db&nbsp;down</span>", Text: "db down", Level: 2,
		Channels: []string{"ops"}, Resource: "mysql", ResourceType: "checker", SourceLink: "/x?w=wksp_test",
	})
	a := call(t, s, "POST", "/api/v1/issue/list", `{"channelUUID":"chan_default","pageIndex":1,"pageSize":10}`)
	var got map[string]any
	var page struct{ Data []map[string]any }
	if err := json.Unmarshal(a.Content, &page); err != nil || len(page.Data) != 1 {
		t.Fatalf("content = %s (%v)", a.Content, err)
	}
	got = page.Data[0]
	for _, k := range []string{"createAt", "updateAt", "deleteAt", "creator", "creatorInfo", "updator", "updatorInfo",
		"description", "extend", "id", "level", "name", "resource", "resourceType", "resourceUUID",
		"status", "statusType", "subIdentify", "uuid", "workspaceUUID"} {
		if _, ok := got[k]; !ok {
			t.Errorf("list row lacks %q", k)
		}
	}
	if got["level"] != 2.0 || got["deleteAt"] != -1.0 || got["workspaceUUID"] != "wksp_test" || got["statusType"] != 10.0 {
		t.Errorf("list row = %v", got)
	}
	ext := got["extend"].(map[string]any)
	if ext["text"] != "db down" || ext["sourceLink"] != "/x?w=wksp_test" {
		t.Errorf("extend = %v", ext)
	}
	if ch := ext["channels"].([]any); len(ch) != 1 || ch[0].(map[string]any)["uuid"] != ops.UUID {
		t.Errorf("extend.channels = %v, want %s", ext["channels"], ops.UUID)
	}

	a = call(t, s, "GET", "/api/v1/issue/"+is.UUID+"/get", "")
	if err := json.Unmarshal(a.Content, &got); err != nil {
		t.Fatal(err)
	}
	if li := got["levelInfo"].(map[string]any); li["name"] != "P2" || li["color"] != "#FFB44A" {
		t.Errorf("levelInfo = %v", li)
	}
	for _, k := range []string{"managerInfos", "bindChannels", "attachments"} {
		if _, ok := got[k]; !ok {
			t.Errorf("get lacks %q", k)
		}
	}
	if a := call(t, s, "GET", "/api/v1/issue/issue_nope/get", ""); a.Status != 404 || a.Code != 404 {
		t.Errorf("get unknown = %d/%d, want 404", a.Status, a.Code)
	}
	s.DeleteIssue(is.UUID)
	if a := call(t, s, "GET", "/api/v1/issue/"+is.UUID+"/get", ""); a.Status != 404 {
		t.Errorf("get deleted = %d, want 404", a.Status)
	}
}

func TestServer_listWindowAndLateIssues(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	now := clk.Now()
	onTime := s.AddIssue(guancetest.IssueSpec{Name: "on time"})
	// Created 5 minutes ago but visible only now (e.g. written late by a monitor).
	late := s.AddIssue(guancetest.IssueSpec{Name: "late", CreateAt: now.Add(-5 * time.Minute)})

	ids, _ := list(t, s, fmt.Sprintf(`{"startTime":%d,"endTime":%d}`, now.Add(-time.Minute).Unix(), now.Unix()))
	if diff := cmp.Diff([]string{onTime.UUID}, ids); diff != "" {
		t.Errorf("[now-60s, now] mismatch (-want +got):\n%s", diff)
	}
	ids, _ = list(t, s, fmt.Sprintf(`{"startTime":%d,"endTime":%d}`, now.Add(-10*time.Minute).Unix(), now.Unix()))
	if diff := cmp.Diff(sorted([]string{onTime.UUID, late.UUID}), sorted(ids)); diff != "" {
		t.Errorf("[now-10m, now] mismatch (-want +got):\n%s", diff)
	}
	// Inclusive bounds, and either may be left out.
	ids, _ = list(t, s, fmt.Sprintf(`{"startTime":%d}`, now.Unix()))
	if diff := cmp.Diff([]string{onTime.UUID}, ids); diff != "" {
		t.Errorf("startTime=now mismatch (-want +got):\n%s", diff)
	}
	ids, _ = list(t, s, fmt.Sprintf(`{"endTime":%d}`, now.Add(-5*time.Minute).Unix()))
	if diff := cmp.Diff([]string{late.UUID}, ids); diff != "" {
		t.Errorf("endTime=createAt of late mismatch (-want +got):\n%s", diff)
	}
}

func TestServer_listFilters(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	ops := s.AddChannel("ops")
	open := s.AddIssue(guancetest.IssueSpec{Name: "CPU high", Level: "system_level_0", Resource: "cpu", Channels: []string{ops.UUID}})
	resolved := s.AddIssue(guancetest.IssueSpec{Name: "disk", Description: "<b>Disk FULL</b>", Level: 2, StatusType: 20, Resource: "disk"})
	pending := s.AddIssue(guancetest.IssueSpec{Name: "mem", Level: "system_level_2", StatusType: 30, Resource: "mem"})
	deleted := s.AddIssue(guancetest.IssueSpec{Name: "gone", Resource: "cpu"})
	s.DeleteIssue(deleted.UUID)

	tests := []struct {
		name string
		body string
		want []string
	}{
		{"All", `{}`, []string{open.UUID, resolved.UUID, pending.UUID, deleted.UUID}},
		{"Channel", `{"channelUUID":"` + ops.UUID + `"}`, []string{open.UUID}},
		{"StatusEqual", `{"filters":[{"key":"statusType","value":20,"equal":true}]}`, []string{resolved.UUID}},
		{"StatusEqualOr", `{"filters":[{"key":"statusType","value":20,"equal":true},{"key":"statusType","value":30,"equal":true}]}`, []string{resolved.UUID, pending.UUID}},
		{"StatusNotEqualAnd", `{"filters":[{"key":"statusType","value":20,"equal":false},{"key":"statusType","value":25,"equal":false}]}`, []string{open.UUID, pending.UUID, deleted.UUID}},
		{"LevelMatchesLegacyInt", `{"filters":[{"key":"level","value":"system_level_2","equal":true}]}`, []string{resolved.UUID, pending.UUID}},
		{"ResourceNotEqual", `{"filters":[{"key":"resource","value":"cpu","equal":false}]}`, []string{resolved.UUID, pending.UUID}},
		{"AndAcrossKeys", `{"filters":[{"key":"resource","value":"cpu","equal":true},{"key":"level","value":"system_level_0","equal":true}]}`, []string{open.UUID}},
		{"SearchDescription", `{"search":"disk full"}`, []string{resolved.UUID}},
		{"SearchName", `{"search":"cpu"}`, []string{open.UUID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, pi := list(t, s, tt.body)
			if diff := cmp.Diff(sorted(tt.want), sorted(ids)); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
			if pi.TotalCount != len(tt.want) || pi.Count != len(ids) {
				t.Errorf("pageInfo = %+v", pi)
			}
		})
	}

	// Deleted issues come back flagged.
	a := call(t, s, "POST", "/api/v1/issue/list", `{"search":"gone"}`)
	var p listPage
	if err := json.Unmarshal(a.Content, &p); err != nil || len(p.Data) != 1 || p.Data[0].DeleteAt <= 0 {
		t.Errorf("deleted issue row = %s", a.Content)
	}

	for _, bad := range []struct{ body, code string }{
		{`{"channelUUID":"chan_nope"}`, "ft.NotFound"},
		{`{"filters":[{"key":"color","value":1,"equal":true}]}`, "ft.ParamError"},
		{`{"pageSize":101}`, "ft.ParamError"},
		{`{`, "ft.ParamError"},
	} {
		if a := call(t, s, "POST", "/api/v1/issue/list", bad.body); a.ErrorCode != bad.code || a.Success {
			t.Errorf("issue/list %s = %d %s, want %s", bad.body, a.Status, a.ErrorCode, bad.code)
		}
	}
}

func TestServer_listOrderAndPaging(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	var byCreate []string
	for i := range 7 {
		byCreate = append(byCreate, s.AddIssue(guancetest.IssueSpec{Name: fmt.Sprint("issue ", i)}).UUID)
		clk.Advance(time.Second)
	}
	all, _ := list(t, s, `{"pageSize":100}`)
	again, _ := list(t, s, `{"pageSize":100}`)
	if !slices.Equal(all, again) {
		t.Errorf("order not deterministic: %v then %v", all, again)
	}
	reversed := slices.Clone(byCreate)
	slices.Reverse(reversed)
	if slices.Equal(all, byCreate) || slices.Equal(all, reversed) {
		t.Errorf("order follows createAt: %v", all)
	}
	var paged []string
	for page := 1; ; page++ {
		ids, pi := list(t, s, fmt.Sprintf(`{"pageIndex":%d,"pageSize":3}`, page))
		if pi != (guancetest.PageInfo{Count: len(ids), PageIndex: page, PageSize: 3, TotalCount: 7}) {
			t.Errorf("page %d pageInfo = %+v", page, pi)
		}
		paged = append(paged, ids...)
		if len(ids) < 3 {
			break
		}
	}
	if diff := cmp.Diff(all, paged); diff != "" {
		t.Errorf("paged mismatch (-want +got):\n%s", diff)
	}

	s.BareArrayList = true
	a := call(t, s, "POST", "/api/v1/issue/list", `{"pageSize":2}`)
	var bare []guancetest.Issue
	if err := json.Unmarshal(a.Content, &bare); err != nil || len(bare) != 2 {
		t.Errorf("bare array content = %s (%v)", a.Content, err)
	}
}

// replyPage is reply/list content.
func replyList(t *testing.T, s *guancetest.Server, issue, query string) ([]string, guancetest.PageInfo) {
	t.Helper()
	a := call(t, s, "GET", "/api/v1/issue/reply/"+issue+"/list"+query, "")
	if a.Status != 200 {
		t.Fatalf("reply/list: %d %s %s", a.Status, a.ErrorCode, a.Message)
	}
	var rs []guancetest.Reply
	if err := json.Unmarshal(a.Content, &rs); err != nil {
		t.Fatalf("content %s: %v", a.Content, err)
	}
	var pi guancetest.PageInfo
	if err := json.Unmarshal(a.PageInfo, &pi); err != nil {
		t.Fatalf("top-level pageInfo %s: %v", a.PageInfo, err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Content)
	}
	return out, pi
}

func TestServer_replies(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	is := s.AddIssue(guancetest.IssueSpec{Name: "x"})
	var want []string // oldest first
	want = append(want, "成员创建了Issue。")
	for i := range 12 {
		if i%3 != 0 { // some share a second
			clk.Advance(time.Second)
		}
		r := s.AddHumanReply(is.UUID, "bob", fmt.Sprint("r", i))
		if r.Type != "reply" || !strings.HasPrefix(r.Creator, "acnt_") || r.CreatorInfo.Name != "bob" {
			t.Errorf("AddHumanReply = %+v", r)
		}
		want = append(want, fmt.Sprint("r", i))
	}
	newest := slices.Clone(want)
	slices.Reverse(newest)

	got, pi := replyList(t, s, is.UUID, "")
	if diff := cmp.Diff(newest[:10], got); diff != "" {
		t.Errorf("default (-createAt, 10) mismatch (-want +got):\n%s", diff)
	}
	if pi != (guancetest.PageInfo{Count: 10, PageIndex: 1, PageSize: 10, TotalCount: 13}) {
		t.Errorf("pageInfo = %+v", pi)
	}
	got, _ = replyList(t, s, is.UUID, "?ordering=createAt&pageIndex=2&pageSize=5")
	if diff := cmp.Diff(want[5:10], got); diff != "" {
		t.Errorf("createAt page 2 mismatch (-want +got):\n%s", diff)
	}
	got, _ = replyList(t, s, is.UUID, "?ordering=-createAt&pageIndex=1&pageSize=20")
	if diff := cmp.Diff(newest, got); diff != "" {
		t.Errorf("-createAt mismatch (-want +got):\n%s", diff)
	}
	if a := call(t, s, "GET", "/api/v1/issue/reply/"+is.UUID+"/list?ordering=name", ""); a.Status != 400 {
		t.Errorf("bad ordering = %d, want 400", a.Status)
	}
	if a := call(t, s, "GET", "/api/v1/issue/reply/issue_nope/list", ""); a.Status != 404 {
		t.Errorf("unknown issue = %d, want 404", a.Status)
	}
	if n := len(s.Replies(is.UUID)); n != 13 {
		t.Errorf("Replies() = %d, want 13", n)
	}
}

func TestServer_createReply(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	is := s.AddIssue(guancetest.IssueSpec{Name: "x"})
	a := call(t, s, "POST", "/api/v1/issue/reply/create", `{"issueUUID":"`+is.UUID+`","content":"hi","attachmentUuids":[],"extend":{"text":"hi"}}`)
	if a.Status != 200 {
		t.Fatalf("create: %d %s", a.Status, a.Message)
	}
	var got map[string]any
	if err := json.Unmarshal(a.Content, &got); err != nil {
		t.Fatal(err)
	}
	if id, ok := got["id"]; !ok || id != nil {
		t.Errorf("id = %v, want null", got["id"])
	}
	if _, ok := got["creatorInfo"]; ok {
		t.Errorf("create answer has creatorInfo")
	}
	if got["creator"] != s.KeyID || got["type"] != "reply" || got["content"] != "hi" {
		t.Errorf("create answer = %v", got)
	}
	rs := s.Replies(is.UUID)
	if last := rs[len(rs)-1]; last.Creator != s.KeyID || last.CreatorInfo.Name != "issuebot" || string(last.Extend) != `{"text":"hi"}` {
		t.Errorf("stored reply = %+v", last)
	}

	for _, bad := range []struct {
		body   string
		status int
	}{
		{`{"content":"x","extend":{}}`, 400},
		{`{"issueUUID":"` + is.UUID + `","content":"x"}`, 400},
		{`{"issueUUID":"` + is.UUID + `","content":"` + strings.Repeat("é", 65536) + `","extend":{}}`, 400},
		{`{"issueUUID":"issue_nope","content":"x","extend":{}}`, 404},
	} {
		if a := call(t, s, "POST", "/api/v1/issue/reply/create", bad.body); a.Status != bad.status {
			t.Errorf("create %.60s = %d, want %d", bad.body, a.Status, bad.status)
		}
	}
	if a := call(t, s, "POST", "/api/v1/issue/reply/create", `{"issueUUID":"`+is.UUID+`","content":"`+strings.Repeat("é", 65535)+`","extend":{}}`); a.Status != 200 {
		t.Errorf("create 65535 runes = %d, want 200", a.Status)
	}
}

func TestServer_replyBumpsUpdateAt(t *testing.T) {
	for _, bump := range []bool{false, true} {
		t.Run(fmt.Sprint(bump), func(t *testing.T) {
			clk := newClock()
			s := guancetest.NewServer(t, guancetest.WithClock(clk.Now), guancetest.WithReplyBumpsUpdateAt(bump))
			is := s.AddIssue(guancetest.IssueSpec{Name: "x"})
			created := is.UpdateAt

			clk.Advance(time.Minute)
			s.AddHumanReply(is.UUID, "bob", "human")
			got, _ := s.Issue(is.UUID)
			if moved := got.UpdateAt != created; moved != bump {
				t.Errorf("human reply moved updateAt = %v, want %v", moved, bump)
			}

			clk.Advance(time.Minute)
			before := got.UpdateAt
			call(t, s, "POST", "/api/v1/issue/reply/create", `{"issueUUID":"`+is.UUID+`","content":"bot","extend":{}}`)
			got, _ = s.Issue(is.UUID)
			if moved := got.UpdateAt != before; moved != bump {
				t.Errorf("API reply moved updateAt = %v, want %v", moved, bump)
			}

			// Status changes always move it.
			clk.Advance(time.Minute)
			s.SetStatus(is.UUID, 20)
			got, _ = s.Issue(is.UUID)
			if got.UpdateAt != clk.Now().Unix() || got.StatusType != 20 {
				t.Errorf("after SetStatus: updateAt %d status %d", got.UpdateAt, got.StatusType)
			}
		})
	}
}

func TestServer_modify(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	is := s.AddIssue(guancetest.IssueSpec{Name: "x"})
	clk.Advance(time.Minute)
	a := call(t, s, "POST", "/api/v1/issue/"+is.UUID+"/modify", `{"statusType":20}`)
	if a.Status != 200 {
		t.Fatalf("modify: %d %s", a.Status, a.Message)
	}
	var got guancetest.Issue
	if err := json.Unmarshal(a.Content, &got); err != nil {
		t.Fatal(err)
	}
	if got.StatusType != 20 || got.UpdateAt != clk.Now().Unix() || got.Updator != s.KeyID {
		t.Errorf("modified issue = %+v", got)
	}
	rs := s.Replies(is.UUID)
	if last := rs[len(rs)-1]; last.Type != "change" || last.Creator != s.KeyID {
		t.Errorf("last reply = %+v, want a change by the key", last)
	}
	for _, bad := range []string{`{"statusType":20,"extend":{}}`, `{"statusType":21}`, `{}`, `{"name":"y"}`} {
		if a := call(t, s, "POST", "/api/v1/issue/"+is.UUID+"/modify", bad); a.Status != 400 {
			t.Errorf("modify %s = %d, want 400", bad, a.Status)
		}
	}
	if a := call(t, s, "POST", "/api/v1/issue/issue_nope/modify", `{"statusType":10}`); a.Status != 404 {
		t.Errorf("modify unknown = %d, want 404", a.Status)
	}
	bodies := s.ModifyBodies()
	if len(bodies) != 6 || string(bodies[0]) != `{"statusType":20}` || !strings.Contains(string(bodies[1]), "extend") {
		t.Errorf("ModifyBodies() = %q", bodies)
	}
}

func TestServer_consoleEdits(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))
	is := s.AddIssue(guancetest.IssueSpec{Name: "x", Creator: "carol"})
	if is.CreatorInfo.Name != "carol" || is.Level != "system_level_3" || is.StatusType != 10 || is.DeleteAt != -1 {
		t.Errorf("AddIssue = %+v", is)
	}
	clk.Advance(time.Minute)
	s.SetLevel(is.UUID, "system_level_0")
	s.SetTitle(is.UUID, "y")
	s.SetStatus(is.UUID, 30)
	got, ok := s.Issue(is.UUID)
	if !ok || got.Level != "system_level_0" || got.Name != "y" || got.StatusType != 30 || got.UpdateAt != clk.Now().Unix() {
		t.Errorf("after edits = %+v", got)
	}
	rs := s.Replies(is.UUID)
	if len(rs) != 4 {
		t.Fatalf("replies = %d, want 4 (created + 3 changes)", len(rs))
	}
	for _, r := range rs {
		if r.Type != "change" {
			t.Errorf("reply %+v, want type change", r)
		}
	}
	clk.Advance(time.Minute)
	s.DeleteIssue(is.UUID)
	if got, _ := s.Issue(is.UUID); got.DeleteAt != clk.Now().Unix() {
		t.Errorf("deleteAt = %d", got.DeleteAt)
	}
	if _, ok := s.Issue("issue_nope"); ok {
		t.Errorf("Issue(unknown) ok")
	}
}

func TestServer_faults(t *testing.T) {
	clk := newClock()
	s := guancetest.NewServer(t, guancetest.WithClock(clk.Now))

	s.Fail = func(r *http.Request) (int, string, bool) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "boom") {
			return 502, `{"code":502,"content":null,"errorCode":"Gateway","message":"x","success":false,"traceId":"t"}`, true
		}
		return 0, "", false
	}
	if a := call(t, s, "POST", "/api/v1/issue/list", `{"search":"boom"}`); a.Status != 502 || a.ErrorCode != "Gateway" {
		t.Errorf("Fail hook = %d %s", a.Status, a.ErrorCode)
	}
	if a := call(t, s, "POST", "/api/v1/issue/list", `{"search":"calm"}`); a.Status != 200 {
		t.Errorf("Fail hook passing on = %d (the body must still be readable)", a.Status)
	}
	s.Fail = nil

	s.FailNext(2, 500, "InternalError")
	for range 2 {
		if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 500 || a.ErrorCode != "InternalError" {
			t.Errorf("FailNext = %d %s", a.Status, a.ErrorCode)
		}
	}
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 200 {
		t.Errorf("after FailNext = %d", a.Status)
	}

	s.Down(true)
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 503 || a.ErrorCode != "InternalError" {
		t.Errorf("Down = %d %s", a.Status, a.ErrorCode)
	}
	s.Down(false)

	s.ThrottleFor(30 * time.Second)
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 401 || a.ErrorCode != "ft.TriggerApiAkCurrentLimiting" {
		t.Errorf("ThrottleFor = %d %s", a.Status, a.ErrorCode)
	}
	clk.Advance(30 * time.Second)
	if a := call(t, s, "GET", "/api/v1/channel/quick_list", ""); a.Status != 200 {
		t.Errorf("after ThrottleFor = %d", a.Status)
	}
	if got := s.Throttled(); got != 1 {
		t.Errorf("Throttled() = %d, want 1", got)
	}
}

// recTB captures Errorf so a test can check that the fake reports a failure.
type recTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recTB) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func TestServer_unhandled(t *testing.T) {
	rec := &recTB{TB: t}
	s := guancetest.NewServer(rec)
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/issue/add"},
		{"DELETE", "/api/v1/issue/reply/repim_1/delete"},
		{"POST", "/api/v1/channel/quick_list"},
		{"GET", "/v2/whatever"},
	} {
		a := call(t, s, c.method, c.path, "{}")
		if a.Status != 400 || a.ErrorCode != "RouterNotFound" {
			t.Errorf("%s %s = %d %s, want 400 RouterNotFound", c.method, c.path, a.Status, a.ErrorCode)
		}
	}
	errs := rec.errors()
	if len(errs) != 4 || errs[0] != "guancetest: unhandled request GET /api/v1/issue/add" {
		t.Errorf("reported = %q", errs)
	}
}

func TestServer_channelsAndLevels(t *testing.T) {
	s := guancetest.NewServer(t)
	ops := s.AddChannel("ops")
	a := call(t, s, "GET", "/api/v1/channel/quick_list", "")
	var chans []guancetest.Channel
	if err := json.Unmarshal(a.Content, &chans); err != nil {
		t.Fatal(err)
	}
	if len(chans) != 2 || chans[0].Name != "default" || chans[0].UUID != guancetest.DefaultChannelUUID || !cmp.Equal(chans[1], ops) {
		t.Errorf("channels = %+v", chans)
	}
	custom := s.AddLevel("Sev1", "#000000")
	a = call(t, s, "GET", "/api/v1/issue-level/list", "")
	var levels []guancetest.Level
	if err := json.Unmarshal(a.Content, &levels); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range levels {
		names = append(names, l.UUID+"="+l.Name+l.Color)
	}
	want := []string{"system_level_0=P0#E94444", "system_level_1=P1#FF7931", "system_level_2=P2#FFB44A", "system_level_3=P3#C9C9C9", custom.UUID + "=Sev1#000000"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("levels mismatch (-want +got):\n%s", diff)
	}
}
