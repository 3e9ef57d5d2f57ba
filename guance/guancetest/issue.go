package guancetest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Ref is an entry of extend.channels or extend.members.
type Ref struct {
	Exists bool   `json:"exists"`
	Type   string `json:"type"`
	UUID   string `json:"uuid"`
}

// IssueExtend is an issue's extend object.
type IssueExtend struct {
	Channels   []Ref  `json:"channels"`
	Members    []Ref  `json:"members"`
	SourceLink string `json:"sourceLink,omitempty"`
	Text       string `json:"text,omitempty"`
}

// UserInfo is an expanded account (creatorInfo, updatorInfo).
type UserInfo struct {
	AcntWsNickname string `json:"acntWsNickname"`
	Email          string `json:"email"`
	IconURL        string `json:"iconUrl"`
	Name           string `json:"name"`
	Username       string `json:"username"`
	UUID           string `json:"uuid,omitempty"`
}

// Issue is an issue as issue/list returns it (the shape of the reference example).
type Issue struct {
	CreateAt    int64       `json:"createAt"`
	UpdateAt    int64       `json:"updateAt"`
	DeleteAt    int64       `json:"deleteAt"`
	Creator     string      `json:"creator"`
	CreatorInfo UserInfo    `json:"creatorInfo"`
	Updator     string      `json:"updator"`
	UpdatorInfo UserInfo    `json:"updatorInfo"`
	Description string      `json:"description"`
	Extend      IssueExtend `json:"extend"`
	ID          int64       `json:"id"`
	// Level is a level uuid string, or a legacy int level.
	Level         any    `json:"level"`
	Name          string `json:"name"`
	Resource      string `json:"resource"`
	ResourceType  string `json:"resourceType"`
	ResourceUUID  string `json:"resourceUUID"`
	Status        int    `json:"status"`
	StatusType    int    `json:"statusType"`
	SubIdentify   string `json:"subIdentify"`
	UUID          string `json:"uuid"`
	WorkspaceUUID string `json:"workspaceUUID"`
}

// clone returns a deep copy of the issue.
func (is *Issue) clone() Issue {
	c := *is
	c.Extend.Channels = slices.Clone(is.Extend.Channels)
	c.Extend.Members = slices.Clone(is.Extend.Members)
	return c
}

// inChannel reports whether the issue was delivered to channel uuid.
func (is *Issue) inChannel(uuid string) bool {
	if uuid == DefaultChannelUUID {
		return true
	}
	return slices.ContainsFunc(is.Extend.Channels, func(r Ref) bool { return r.UUID == uuid })
}

// IssueSpec describes an issue for AddIssue. Zero fields get defaults.
type IssueSpec struct {
	// UUID defaults to a generated issue_….
	UUID string
	Name string
	// Description may be HTML.
	Description string
	// Text is extend.text, the plain-text description.
	Text string
	// Level is a level uuid string or a legacy int; nil means "system_level_3".
	Level any
	// StatusType defaults to 10 (Open).
	StatusType int
	// Channels are channel uuids or names the issue is delivered to besides "default".
	Channels []string
	// CreateAt defaults to Now. It may be in the past, to play an issue that becomes
	// visible late.
	CreateAt time.Time
	// Resource, ResourceType and SourceLink (extend.sourceLink) describe the source.
	Resource, ResourceType, SourceLink string
	// Creator is a person's name (or an acnt_/wsak_ uuid); default DefaultPerson.
	Creator string
}

// AddIssue stores an issue as created in Guance, with its "change" reply, and returns it.
func (s *Server) AddIssue(in IssueSpec) Issue {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	id := s.nextSeq()
	if in.UUID == "" {
		in.UUID = fmt.Sprintf("issue_%08d", id)
	}
	if _, dup := s.issues[in.UUID]; dup {
		s.t.Errorf("guancetest: AddIssue: issue %s exists", in.UUID)
		return Issue{}
	}
	if in.Level == nil {
		in.Level = "system_level_3"
	}
	if in.StatusType == 0 {
		in.StatusType = 10
	}
	if in.CreateAt.IsZero() {
		in.CreateAt = now
	}
	if in.Creator == "" {
		in.Creator = DefaultPerson
	}
	chans := []Ref{}
	for _, ref := range in.Channels {
		c, ok := s.channel(ref)
		if !ok {
			s.t.Errorf("guancetest: AddIssue: no channel %q", ref)
			continue
		}
		if c.UUID != DefaultChannelUUID {
			chans = append(chans, Ref{Exists: true, Type: "#", UUID: c.UUID})
		}
	}
	creator := s.userInfo(in.Creator)
	is := &Issue{
		CreateAt: in.CreateAt.Unix(), UpdateAt: in.CreateAt.Unix(), DeleteAt: -1,
		Creator: creator.UUID, CreatorInfo: creator, Updator: creator.UUID, UpdatorInfo: creator,
		Description: in.Description,
		Extend: IssueExtend{
			Channels: chans, Members: []Ref{}, SourceLink: in.SourceLink, Text: in.Text,
		},
		ID: 108000 + id, Level: in.Level, Name: in.Name,
		Resource: in.Resource, ResourceType: in.ResourceType,
		StatusType: in.StatusType, UUID: in.UUID, WorkspaceUUID: WorkspaceUUID,
	}
	s.issues[is.UUID] = is
	s.addReply(is, "change", in.Creator, "成员创建了Issue。", json.RawMessage(`{}`), in.CreateAt, false)
	return is.clone()
}

// Issue returns the stored issue.
func (s *Server) Issue(uuid string) (Issue, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issues[uuid]
	if !ok {
		return Issue{}, false
	}
	return is.clone(), true
}

// SetStatus changes an issue's status as a person does in the console: it bumps
// updateAt and adds a "change" reply.
func (s *Server) SetStatus(issueUUID string, statusType int) {
	s.t.Helper()
	s.change(issueUUID, "SetStatus", func(is *Issue) string {
		old := is.StatusType
		is.StatusType = statusType
		return fmt.Sprintf("状态由 %s 变更为 %s。", statusName(old), statusName(statusType))
	})
}

// SetLevel changes an issue's level (a level uuid or a legacy int) as a person does in
// the console.
func (s *Server) SetLevel(issueUUID string, level any) {
	s.t.Helper()
	s.change(issueUUID, "SetLevel", func(is *Issue) string {
		is.Level = level
		return fmt.Sprintf("等级变更为 %v。", level)
	})
}

// SetTitle changes an issue's name as a person does in the console.
func (s *Server) SetTitle(issueUUID, name string) {
	s.t.Helper()
	s.change(issueUUID, "SetTitle", func(is *Issue) string {
		is.Name = name
		return fmt.Sprintf("标题变更为 %s。", name)
	})
}

// DeleteIssue marks an issue deleted (deleteAt = Now). issue/list still returns it.
func (s *Server) DeleteIssue(issueUUID string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issues[issueUUID]
	if !ok {
		s.t.Errorf("guancetest: DeleteIssue: no issue %s", issueUUID)
		return
	}
	is.DeleteAt = s.now().Unix()
}

// change applies a console edit by DefaultPerson. s.mu is not held.
func (s *Server) change(issueUUID, op string, edit func(*Issue) string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issues[issueUUID]
	if !ok {
		s.t.Errorf("guancetest: %s: no issue %s", op, issueUUID)
		return
	}
	now := s.now()
	msg := edit(is)
	who := s.userInfo(DefaultPerson)
	is.UpdateAt, is.Updator, is.UpdatorInfo = now.Unix(), who.UUID, who
	s.addReply(is, "change", DefaultPerson, msg, json.RawMessage(`{}`), now, false)
}

// statusName names a status for "change" replies.
func statusName(st int) string {
	switch st {
	case 10:
		return "Open"
	case 15:
		return "Working"
	case 20:
		return "Resolved"
	case 25:
		return "Closed"
	case 30:
		return "Pending"
	}
	return strconv.Itoa(st)
}

// levelKey normalizes a level (uuid string or legacy number) for comparison.
func levelKey(v any) string {
	switch l := v.(type) {
	case string:
		if n, err := strconv.Atoi(l); err == nil {
			return "system_level_" + strconv.Itoa(n)
		}
		return l
	case float64:
		return "system_level_" + strconv.Itoa(int(l))
	case int:
		return "system_level_" + strconv.Itoa(l)
	case json.Number:
		return levelKey(l.String())
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// listRequest is the issue/list body.
type listRequest struct {
	ChannelUUID string   `json:"channelUUID"`
	StartTime   *float64 `json:"startTime"`
	EndTime     *float64 `json:"endTime"`
	Search      string   `json:"search"`
	Filters     []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
		Equal bool   `json:"equal"`
	} `json:"filters"`
	PageIndex int `json:"pageIndex"`
	PageSize  int `json:"pageSize"`
}

// listIssues serves POST /api/v1/issue/list; s.mu is held.
func (s *Server) listIssues(w http.ResponseWriter, body []byte) int {
	var req listRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return s.paramError(w, "invalid body: %v", err)
	}
	pageIndex, pageSize, bad := paging(req.PageIndex, req.PageSize)
	if bad != "" {
		return s.paramError(w, "%s", bad)
	}
	channel := DefaultChannelUUID
	if req.ChannelUUID != "" {
		c, ok := s.channel(req.ChannelUUID)
		if !ok || c.UUID != req.ChannelUUID {
			return s.notFound(w, "channel "+req.ChannelUUID)
		}
		channel = c.UUID
	}
	var eq, ne = map[string][]any{}, map[string][]any{}
	for _, f := range req.Filters {
		switch f.Key {
		case "statusType", "level", "resource", "creator", "updator":
		default:
			return s.paramError(w, "unknown filter key %q", f.Key)
		}
		if f.Equal {
			eq[f.Key] = append(eq[f.Key], f.Value)
		} else {
			ne[f.Key] = append(ne[f.Key], f.Value)
		}
	}
	search := strings.ToLower(req.Search)

	var rows []*Issue
	for _, is := range s.issues {
		if !is.inChannel(channel) {
			continue
		}
		if req.StartTime != nil && float64(is.CreateAt) < math.Floor(*req.StartTime) {
			continue
		}
		if req.EndTime != nil && float64(is.CreateAt) > *req.EndTime {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(is.Name), search) &&
			!strings.Contains(strings.ToLower(is.Description), search) &&
			!strings.Contains(strings.ToLower(is.Extend.Text), search) {
			continue
		}
		match := true
		for key, vals := range eq {
			if !slices.ContainsFunc(vals, func(v any) bool { return filterMatch(is, key, v) }) {
				match = false
			}
		}
		for key, vals := range ne {
			if slices.ContainsFunc(vals, func(v any) bool { return filterMatch(is, key, v) }) {
				match = false
			}
		}
		if match {
			rows = append(rows, is)
		}
	}
	rows = sortedBy(rows, func(is *Issue) uint64 { return hash64(is.UUID) })

	page := []Issue{}
	for i := (pageIndex - 1) * pageSize; i < len(rows) && i < pageIndex*pageSize; i++ {
		page = append(page, rows[i].clone())
	}
	pi := &PageInfo{Count: len(page), PageIndex: pageIndex, PageSize: pageSize, TotalCount: len(rows)}
	if s.BareArrayList {
		return s.ok(w, page, nil)
	}
	return s.ok(w, struct {
		Data     []Issue   `json:"data"`
		PageInfo *PageInfo `json:"pageInfo"`
	}{page, pi}, nil)
}

// filterMatch reports whether the issue's key equals v.
func filterMatch(is *Issue, key string, v any) bool {
	switch key {
	case "statusType":
		n, err := strconv.Atoi(strings.TrimSuffix(fmt.Sprint(v), ".0"))
		return err == nil && n == is.StatusType
	case "level":
		return levelKey(v) == levelKey(is.Level)
	case "resource":
		return fmt.Sprint(v) == is.Resource
	case "creator":
		return fmt.Sprint(v) == is.Creator
	case "updator":
		return fmt.Sprint(v) == is.Updator
	}
	return false
}

// paging applies defaults and bounds to pageIndex and pageSize; bad says what is wrong.
func paging(pageIndex, pageSize int) (int, int, string) {
	if pageIndex == 0 {
		pageIndex = 1
	}
	if pageSize == 0 {
		pageSize = 10
	}
	switch {
	case pageIndex < 1:
		return 0, 0, "pageIndex must be at least 1"
	case pageSize < 1 || pageSize > 100:
		return 0, 0, "pageSize must be between 1 and 100"
	}
	return pageIndex, pageSize, ""
}

// getIssue serves GET /api/v1/issue/{uuid}/get; s.mu is held.
func (s *Server) getIssue(w http.ResponseWriter, uuid string) int {
	is, ok := s.issues[uuid]
	if !ok || is.DeleteAt > 0 {
		return s.notFound(w, "issue "+uuid)
	}
	m := toMap(is)
	lv, ok := s.level(levelKey(is.Level))
	if !ok {
		lv = Level{Name: "未知", Color: "#C9C9C9"}
	}
	m["levelInfo"] = map[string]string{"color": lv.Color, "name": lv.Name}
	m["attachments"] = []any{}
	bind := []map[string]string{{"name": "default", "uuid": DefaultChannelUUID}}
	for _, r := range is.Extend.Channels {
		if c, ok := s.channel(r.UUID); ok {
			bind = append(bind, map[string]string{"name": c.Name, "uuid": c.UUID})
		}
	}
	m["bindChannels"] = bind
	m["managerInfos"] = []any{}
	m["declaration"] = map[string]string{"business": "", "organization": ""}
	return s.ok(w, m, nil)
}

// modifyIssue serves POST /api/v1/issue/{uuid}/modify; s.mu is held.
func (s *Server) modifyIssue(w http.ResponseWriter, uuid string, body []byte) int {
	s.modifyBodies = append(s.modifyBodies, slices.Clone(body))
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return s.paramError(w, "invalid body: %v", err)
	}
	for k := range fields {
		if k != "statusType" {
			return s.paramError(w, "guancetest: modify accepts only statusType, got %q", k)
		}
	}
	raw, ok := fields["statusType"]
	if !ok {
		return s.paramError(w, "statusType is required")
	}
	var st int
	if err := json.Unmarshal(raw, &st); err != nil {
		return s.paramError(w, "statusType: %v", err)
	}
	switch st {
	case 10, 15, 20, 25, 30:
	default:
		return s.paramError(w, "statusType must be one of 10, 15, 20, 25, 30")
	}
	is, ok := s.issues[uuid]
	if !ok || is.DeleteAt > 0 {
		return s.notFound(w, "issue "+uuid)
	}
	if is.StatusType != st {
		now := s.now()
		old := is.StatusType
		bot := s.userInfo(s.KeyID)
		is.StatusType = st
		is.UpdateAt, is.Updator, is.UpdatorInfo = now.Unix(), bot.UUID, bot
		s.addReply(is, "change", s.KeyID,
			fmt.Sprintf("状态由 %s 变更为 %s。", statusName(old), statusName(st)), json.RawMessage(`{}`), now, false)
	}
	return s.ok(w, is.clone(), nil)
}

// toMap turns v into a JSON object map, to add or drop keys.
func toMap(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("guancetest: marshal %T: %v", v, err))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("guancetest: unmarshal %T: %v", v, err))
	}
	return m
}
