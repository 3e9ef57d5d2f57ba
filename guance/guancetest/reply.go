package guancetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// MaxReplyRunes is the longest reply content Guance accepts.
const MaxReplyRunes = 65535

// Reply is a reply as reply/list returns it.
type Reply struct {
	AttachmentsList  []any           `json:"attachmentsList"`
	Content          string          `json:"content"`
	Type             string          `json:"type"`
	CreateAt         int64           `json:"createAt"`
	UpdateAt         int64           `json:"updateAt"`
	DeleteAt         int64           `json:"deleteAt"`
	Creator          string          `json:"creator"`
	CreatorInfo      UserInfo        `json:"creatorInfo"`
	Updator          string          `json:"updator"`
	UpdatorInfo      UserInfo        `json:"updatorInfo"`
	Extend           json.RawMessage `json:"extend"`
	ID               int64           `json:"id"`
	IsModify         bool            `json:"is_modify"`
	LatestModifyTime int64           `json:"latest_modify_time"`
	IssueUUID        string          `json:"issueUUID"`
	Status           int             `json:"status"`
	UUID             string          `json:"uuid"`
	WorkspaceUUID    string          `json:"workspaceUUID"`
}

// clone returns a deep copy of the reply.
func (r *Reply) clone() Reply {
	c := *r
	c.AttachmentsList = slices.Clone(r.AttachmentsList)
	c.Extend = slices.Clone(r.Extend)
	return c
}

// AddHumanReply stores a reply written by a person in the console and returns it.
func (s *Server) AddHumanReply(issueUUID, author, content string) Reply {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issues[issueUUID]
	if !ok {
		s.t.Errorf("guancetest: AddHumanReply: no issue %s", issueUUID)
		return Reply{}
	}
	return s.addReply(is, "reply", author, content, json.RawMessage(`{}`), s.now(), s.ReplyBumpsUpdateAt).clone()
}

// Replies returns an issue's replies in creation order.
func (s *Server) Replies(issueUUID string) []Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Reply
	for _, r := range s.replies[issueUUID] {
		out = append(out, r.clone())
	}
	return out
}

// addReply stores a reply by who (a person's name or the API key id); bump sets the
// issue's updateAt. s.mu is held.
func (s *Server) addReply(is *Issue, typ, who, content string, extend json.RawMessage, at time.Time, bump bool) *Reply {
	id := s.nextSeq()
	info := s.userInfo(who)
	r := &Reply{
		AttachmentsList: []any{}, Content: content, Type: typ,
		CreateAt: at.Unix(), UpdateAt: at.Unix(), DeleteAt: -1,
		Creator: info.UUID, CreatorInfo: info, Updator: info.UUID, UpdatorInfo: info,
		Extend: extend, ID: 313000 + id, LatestModifyTime: at.Unix(), IssueUUID: is.UUID,
		UUID: fmt.Sprintf("repim_%08d", id), WorkspaceUUID: WorkspaceUUID,
	}
	s.replies[is.UUID] = append(s.replies[is.UUID], r)
	if bump {
		is.UpdateAt = at.Unix()
	}
	return r
}

// listReplies serves GET /api/v1/issue/reply/{uuid}/list; s.mu is held.
func (s *Server) listReplies(w http.ResponseWriter, r *http.Request, uuid string) int {
	q := r.URL.Query()
	ordering := q.Get("ordering")
	if ordering == "" {
		ordering = "-createAt"
	}
	if ordering != "createAt" && ordering != "-createAt" {
		return s.paramError(w, "unknown ordering %q", ordering)
	}
	var nums [2]int
	for i, k := range []string{"pageIndex", "pageSize"} {
		if v := q.Get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return s.paramError(w, "%s: %v", k, err)
			}
			nums[i] = n
		}
	}
	pageIndex, pageSize, bad := paging(nums[0], nums[1])
	if bad != "" {
		return s.paramError(w, "%s", bad)
	}
	if _, ok := s.issues[uuid]; !ok {
		return s.notFound(w, "issue "+uuid)
	}
	all := s.replies[uuid] // creation order, so ties on createAt keep it
	rows := sortedBy(all, func(r *Reply) int64 { return r.CreateAt })
	if ordering == "-createAt" {
		slices.Reverse(rows)
	}
	page := []Reply{}
	for i := (pageIndex - 1) * pageSize; i < len(rows) && i < pageIndex*pageSize; i++ {
		page = append(page, rows[i].clone())
	}
	return s.ok(w, page, &PageInfo{Count: len(page), PageIndex: pageIndex, PageSize: pageSize, TotalCount: len(rows)})
}

// createReply serves POST /api/v1/issue/reply/create; s.mu is held.
func (s *Server) createReply(w http.ResponseWriter, body []byte) int {
	var req struct {
		IssueUUID       string          `json:"issueUUID"`
		Content         *string         `json:"content"`
		AttachmentUUIDs []string        `json:"attachmentUuids"`
		Extend          json.RawMessage `json:"extend"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return s.paramError(w, "invalid body: %v", err)
	}
	if req.IssueUUID == "" {
		return s.paramError(w, "issueUUID is required")
	}
	if len(req.Extend) == 0 {
		return s.paramError(w, "extend is required")
	}
	if string(req.Extend) == "null" {
		req.Extend = json.RawMessage(`{}`)
	}
	content := ""
	if req.Content != nil {
		content = *req.Content
	}
	if runeLen(content) > MaxReplyRunes {
		return s.paramError(w, "content is longer than %d", MaxReplyRunes)
	}
	is, ok := s.issues[req.IssueUUID]
	if !ok || is.DeleteAt > 0 {
		return s.notFound(w, "issue "+req.IssueUUID)
	}
	r := s.addReply(is, "reply", s.KeyID, content, slices.Clone(req.Extend), s.now(), s.ReplyBumpsUpdateAt)
	// The create answer has no creatorInfo and a null id (reference §2.11).
	m := toMap(r)
	for _, k := range []string{"creatorInfo", "updatorInfo", "attachmentsList", "is_modify", "latest_modify_time"} {
		delete(m, k)
	}
	m["id"] = nil
	return s.ok(w, m, nil)
}
