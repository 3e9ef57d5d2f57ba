package guance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// defaultIssuePageSize is the issue/list page size when IssueQuery leaves it 0; it
	// is also the largest page Guance's list APIs are documented to accept.
	defaultIssuePageSize = 100
	// maxIssuePages bounds ListAllIssues against a server that never ends its pages.
	maxIssuePages = 1000
)

// StatusType is an issue's status.
type StatusType int

// Issue statuses. Older deployments accept only Open, Resolved and Pending.
const (
	StatusOpen     StatusType = 10
	StatusWorking  StatusType = 15
	StatusResolved StatusType = 20
	StatusClosed   StatusType = 25
	StatusPending  StatusType = 30
)

// String returns the status's English name, or "status(N)" for an unknown value.
func (s StatusType) String() string {
	switch s {
	case StatusOpen:
		return "Open"
	case StatusWorking:
		return "Working"
	case StatusResolved:
		return "Resolved"
	case StatusClosed:
		return "Closed"
	case StatusPending:
		return "Pending"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// UnmarshalJSON decodes a status from a number, a numeric string or null (0).
func (s *StatusType) UnmarshalJSON(b []byte) error {
	var n flexInt
	if err := n.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("decode statusType: %w", err)
	}
	*s = StatusType(n)
	return nil
}

// LevelRef is the uuid of an issue's level: "system_level_0".."system_level_3" (P0..P3,
// P3 shown as 未知/Unknown), "issl_…" for a custom level, or "" when the issue has none.
type LevelRef string

// UnmarshalJSON accepts a level uuid, "", null, and the legacy integer levels
// (0..3, which become "system_level_N").
func (l *LevelRef) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if isNull(b) {
		*l = ""
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode level: %w", err)
		}
		s = strings.TrimSpace(s)
		if n, err := strconv.Atoi(s); err == nil {
			*l = legacyLevel(n)
			return nil
		}
		*l = LevelRef(s)
		return nil
	}
	f, _, err := parseNumber(b)
	if err != nil {
		return fmt.Errorf("decode level: %w", err)
	}
	*l = legacyLevel(int(f))
	return nil
}

// legacyLevel maps an old integer level to its system level uuid.
func legacyLevel(n int) LevelRef {
	if n < 0 {
		return ""
	}
	return LevelRef("system_level_" + strconv.Itoa(n))
}

// UserInfo is an account as Guance expands it in creatorInfo, updatorInfo and the like.
// An API key shows up with its wsak_ id as UUID and the key's name as Name.
type UserInfo struct {
	UUID     string `json:"uuid,omitempty"`
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username"`
}

// Extend is the free-form extend object of issues and replies. The keys issuebot reads
// are decoded; the whole object is kept in Raw.
type Extend struct {
	// Text is the plain-text rendering of the HTML description or reply content.
	Text string
	// SourceLink is the console-relative link to the issue's source.
	SourceLink string
	// Channels are the uuids of the channels the issue was delivered to besides the
	// default one (extend.channels).
	Channels []string
	// Raw is the extend object as received (nil when absent or null).
	Raw json.RawMessage
}

// UnmarshalJSON keeps the raw object and decodes the known keys; an extend that is not an
// object is kept raw only.
func (e *Extend) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*e = Extend{}
	if isNull(b) {
		return nil
	}
	e.Raw = append(json.RawMessage(nil), b...)
	if b[0] != '{' {
		return nil
	}
	var v struct {
		Text       flexString `json:"text"`
		SourceLink flexString `json:"sourceLink"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		// A known key of an odd type must not sink the whole issue.
		return nil
	}
	e.Text, e.SourceLink = string(v.Text), string(v.SourceLink)
	var c struct {
		Channels []struct {
			UUID string `json:"uuid"`
		} `json:"channels"`
	}
	if json.Unmarshal(b, &c) == nil {
		for _, ch := range c.Channels {
			if ch.UUID != "" {
				e.Channels = append(e.Channels, ch.UUID)
			}
		}
	}
	return nil
}

// MarshalJSON returns Raw when set, else an object of the known keys.
func (e Extend) MarshalJSON() ([]byte, error) {
	if len(e.Raw) > 0 {
		return e.Raw, nil
	}
	type ref struct {
		Type string `json:"type"`
		UUID string `json:"uuid"`
	}
	v := struct {
		Text       string `json:"text,omitempty"`
		SourceLink string `json:"sourceLink,omitempty"`
		Channels   []ref  `json:"channels,omitempty"`
	}{Text: e.Text, SourceLink: e.SourceLink}
	for _, c := range e.Channels {
		v.Channels = append(v.Channels, ref{Type: "#", UUID: c})
	}
	return json.Marshal(v)
}

// Issue is a Guance 异常追踪 issue as issue/list and issue/get return it.
type Issue struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
	// Description may be HTML; prefer Text() for display.
	Description  string     `json:"description"`
	Level        LevelRef   `json:"level"`
	StatusType   StatusType `json:"statusType"`
	Resource     string     `json:"resource"`
	ResourceType string     `json:"resourceType"`
	ResourceUUID string     `json:"resourceUUID"`
	// Creator is an account uuid (acnt_…), or an API key id (wsak_…).
	Creator       string    `json:"creator"`
	CreatorInfo   *UserInfo `json:"creatorInfo"`
	Updator       string    `json:"updator"`
	UpdatorInfo   *UserInfo `json:"updatorInfo"`
	WorkspaceUUID string    `json:"workspaceUUID"`
	CreateAt      Time      `json:"createAt"`
	UpdateAt      Time      `json:"updateAt"`
	// DeleteAt is set once the issue is deleted; see Deleted.
	DeleteAt Time   `json:"deleteAt"`
	Extend   Extend `json:"extend"`
}

// Deleted reports whether the issue has been deleted (deleteAt > 0). issue/list may
// return deleted issues; callers skip them.
func (i *Issue) Deleted() bool { return !i.DeleteAt.IsZero() }

// Text returns the plain-text rendering of the description (extend.text), or "" when
// Guance sent none; the description itself may be HTML.
func (i *Issue) Text() string { return strings.TrimSpace(i.Extend.Text) }

// Filter is one condition of an issue list query. Equal false means "not equal".
type Filter struct {
	// Key is one of "statusType", "level", "resource", "creator", "updator".
	Key   string `json:"key"`
	Value any    `json:"value"`
	Equal bool   `json:"equal"`
}

// IssueQuery selects issues for ListIssues and ListAllIssues.
type IssueQuery struct {
	// ChannelUUID is the channel to list; use the "default" channel's uuid for all
	// issues. Empty leaves it out of the request.
	ChannelUUID string
	// Start and End bound the issues' time (Guance does not document which field;
	// createAt by all evidence). They are sent as Unix seconds and left out when zero.
	Start, End time.Time
	// Search matches the name and description.
	Search  string
	Filters []Filter
	// PageIndex is 1-based; 0 means 1. PageSize 0 means 100, the most Guance documents;
	// larger values are lowered to 100.
	PageIndex, PageSize int
}

// issueListRequest is the issue/list body.
type issueListRequest struct {
	ChannelUUID string   `json:"channelUUID,omitempty"`
	StartTime   *int64   `json:"startTime,omitempty"`
	EndTime     *int64   `json:"endTime,omitempty"`
	Search      string   `json:"search"`
	Filters     []Filter `json:"filters"`
	PageIndex   int      `json:"pageIndex"`
	PageSize    int      `json:"pageSize"`
}

func (q IssueQuery) request() issueListRequest {
	r := issueListRequest{
		ChannelUUID: q.ChannelUUID,
		Search:      q.Search,
		Filters:     q.Filters,
		PageIndex:   q.PageIndex,
		PageSize:    q.PageSize,
	}
	if r.Filters == nil {
		r.Filters = []Filter{}
	}
	if r.PageIndex < 1 {
		r.PageIndex = 1
	}
	if r.PageSize < 1 || r.PageSize > defaultIssuePageSize {
		// Above 100 Guance may refuse the call or shorten the page; a short page would end
		// ListAllIssues early and lose issues.
		r.PageSize = defaultIssuePageSize
	}
	if !q.Start.IsZero() {
		s := q.Start.Unix()
		r.StartTime = &s
	}
	if !q.End.IsZero() {
		e := q.End.Unix()
		r.EndTime = &e
	}
	return r
}

// ListIssues returns one page of the issues q selects, in Guance's (undocumented) order.
// Deleted issues may be among them.
//
// Guance OpenAPI: POST /api/v1/issue/list
// (guance-docs: zh/open-api/issue/list.md).
func (c *Client) ListIssues(ctx context.Context, q IssueQuery) ([]Issue, PageInfo, error) {
	req := q.request()
	env, err := c.do(ctx, http.MethodPost, "issue/list", nil, req)
	if err != nil {
		return nil, PageInfo{}, fmt.Errorf("list issues: %w", err)
	}
	issues, pi, err := decodePage[Issue](env)
	if err != nil {
		return nil, PageInfo{}, fmt.Errorf("list issues: %w", err)
	}
	return issues, pageOf(pi, len(issues), req.PageIndex, req.PageSize), nil
}

// ListAllIssues pages through the issues q selects, from q.PageIndex to the end: until a
// page is short or empty, or the pages cover totalCount. Offset paging shifts when
// issues are added meanwhile, so the result is deduplicated by uuid (first row wins).
// Every page costs one request of the rate budget.
func (c *Client) ListAllIssues(ctx context.Context, q IssueQuery) ([]Issue, error) {
	req := q.request()
	q.PageIndex, q.PageSize = req.PageIndex, req.PageSize
	var all []Issue
	seen := make(map[string]bool)
	for pages := 0; ; pages++ {
		if pages == maxIssuePages {
			return nil, fmt.Errorf("list all issues: more than %d pages", maxIssuePages)
		}
		issues, pi, err := c.ListIssues(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list all issues: page %d: %w", q.PageIndex, err)
		}
		fresh := 0
		for _, is := range issues {
			if seen[is.UUID] {
				continue
			}
			seen[is.UUID] = true
			fresh++
			all = append(all, is)
		}
		switch {
		case len(issues) == 0, len(issues) < q.PageSize:
		case pi.TotalCount > 0 && q.PageIndex*q.PageSize >= pi.TotalCount:
		case fresh == 0:
			// A full page of rows already seen: the server is not paging (it ignores
			// pageIndex), so further pages would repeat it forever.
			c.logger.Debug("issue list repeats itself; stopped paging", "page_index", q.PageIndex)
		default:
			q.PageIndex++
			continue
		}
		return all, nil
	}
}

// GetIssue returns one issue. An issue that does not exist (or is deleted, on some
// deployments) gives an error matching ErrNotFound.
//
// Guance OpenAPI: GET /api/v1/issue/{issue_uuid}/get
// (guance-docs: zh/open-api/issue/get.md).
func (c *Client) GetIssue(ctx context.Context, issueUUID string) (*Issue, error) {
	id, err := pathEscape("issue uuid", issueUUID)
	if err != nil {
		return nil, fmt.Errorf("get issue: %w", err)
	}
	env, err := c.do(ctx, http.MethodGet, "issue/"+id+"/get", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("get issue %s: %w", issueUUID, err)
	}
	var is Issue
	ok, err := decodeContent(env, &is)
	if err != nil {
		return nil, fmt.Errorf("get issue %s: %w", issueUUID, err)
	}
	if !ok {
		return nil, fmt.Errorf("get issue %s: empty content: %w", issueUUID, ErrNotFound)
	}
	return &is, nil
}

// SetStatus changes an issue's status and returns the issue as Guance answers it (nil if
// Guance answers without it). The body is exactly {"statusType":N}: sending extend could
// wipe the issue's owners and members.
//
// Guance OpenAPI: POST /api/v1/issue/{issue_uuid}/modify
// (guance-docs: zh/open-api/issue/modify.md).
func (c *Client) SetStatus(ctx context.Context, issueUUID string, s StatusType) (*Issue, error) {
	id, err := pathEscape("issue uuid", issueUUID)
	if err != nil {
		return nil, fmt.Errorf("set issue status: %w", err)
	}
	if s <= 0 {
		return nil, fmt.Errorf("set issue %s status: invalid status %d", issueUUID, int(s))
	}
	body := struct {
		StatusType StatusType `json:"statusType"`
	}{s}
	env, err := c.do(ctx, http.MethodPost, "issue/"+id+"/modify", nil, body)
	if err != nil {
		return nil, fmt.Errorf("set issue %s status to %v: %w", issueUUID, s, err)
	}
	content := bytes.TrimSpace(env.Content)
	if len(content) == 0 || content[0] != '{' {
		return nil, nil
	}
	var is Issue
	if err := json.Unmarshal(content, &is); err != nil {
		return nil, fmt.Errorf("set issue %s status to %v: decode content: %w", issueUUID, s, err)
	}
	return &is, nil
}
