package guance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// MaxReplyRunes is the longest reply content Guance accepts.
	MaxReplyRunes = 65535
	// defaultReplyPageSize is the reply/list page size when ReplyListOptions leaves it 0.
	defaultReplyPageSize = 20
)

// Reply is an entry under an issue: a person's reply (Type "reply") or a system entry
// (Type "change": creation, status, level or description changes). Other types may
// appear; treat them generically.
type Reply struct {
	UUID      string `json:"uuid"`
	IssueUUID string `json:"issueUUID"`
	Type      string `json:"type"`
	// Content may be HTML; Extend.Text holds a plain-text rendering when present.
	Content string `json:"content"`
	// Creator is an account uuid (acnt_…) or, for replies made through the OpenAPI, the
	// API key's id (wsak_…).
	Creator     string    `json:"creator"`
	CreatorInfo *UserInfo `json:"creatorInfo"`
	CreateAt    Time      `json:"createAt"`
	UpdateAt    Time      `json:"updateAt"`
	DeleteAt    Time      `json:"deleteAt"`
	// IsModify and LatestModifyTime reveal edits; an edited reply keeps its CreateAt.
	IsModify         bool   `json:"is_modify"`
	LatestModifyTime Time   `json:"latest_modify_time"`
	Extend           Extend `json:"extend"`
}

// UnmarshalJSON decodes a reply whose is_modify may be a bool, a number or null.
func (r *Reply) UnmarshalJSON(b []byte) error {
	type plain Reply
	var v struct {
		plain
		IsModify flexBool `json:"is_modify"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Reply(v.plain)
	r.IsModify = bool(v.IsModify)
	return nil
}

// ByAPIKey reports whether the reply was written through the OpenAPI by an API key
// (creator wsak_…), for example by this bot.
func (r *Reply) ByAPIKey() bool { return strings.HasPrefix(r.Creator, "wsak_") }

// ReplyListOptions selects a page of replies.
type ReplyListOptions struct {
	// Ordering is "-createAt" (newest first, the default) or "createAt".
	Ordering string
	// PageIndex is 1-based; 0 means 1. PageSize 0 means 20.
	PageIndex, PageSize int
}

// ListReplies returns one page of an issue's replies (system entries included).
//
// Guance OpenAPI: GET /api/v1/issue/reply/{issue_uuid}/list
// (guance-docs: zh/open-api/issue/getissuereplylist.md).
func (c *Client) ListReplies(ctx context.Context, issueUUID string, o ReplyListOptions) ([]Reply, PageInfo, error) {
	id, err := pathEscape("issue uuid", issueUUID)
	if err != nil {
		return nil, PageInfo{}, fmt.Errorf("list replies: %w", err)
	}
	if o.Ordering == "" {
		o.Ordering = "-createAt"
	}
	if o.PageIndex < 1 {
		o.PageIndex = 1
	}
	if o.PageSize < 1 {
		o.PageSize = defaultReplyPageSize
	}
	q := url.Values{}
	q.Set("ordering", o.Ordering)
	q.Set("pageIndex", strconv.Itoa(o.PageIndex))
	q.Set("pageSize", strconv.Itoa(o.PageSize))
	env, err := c.do(ctx, http.MethodGet, "issue/reply/"+id+"/list", q, nil)
	if err != nil {
		return nil, PageInfo{}, fmt.Errorf("list replies of issue %s: %w", issueUUID, err)
	}
	replies, pi, err := decodePage[Reply](env)
	if err != nil {
		return nil, PageInfo{}, fmt.Errorf("list replies of issue %s: %w", issueUUID, err)
	}
	return replies, pageOf(pi, len(replies), o.PageIndex, o.PageSize), nil
}

// CreateReply posts a reply to an issue, as the API key (Guance shows the key's name as
// the author), with content also as extend.text. Content longer than MaxReplyRunes runes
// is refused without a request; callers truncate. CreateReply is not idempotent: do not
// retry it blindly after a transport error, the first try may have landed. When Guance
// accepts the reply but answers without it, the returned Reply has an empty UUID.
//
// Guance OpenAPI: POST /api/v1/issue/reply/create
// (guance-docs: zh/open-api/issue/createissuereply.md).
func (c *Client) CreateReply(ctx context.Context, issueUUID, content string) (*Reply, error) {
	if strings.TrimSpace(issueUUID) == "" {
		return nil, fmt.Errorf("create reply: issue uuid is empty")
	}
	if n := utf8.RuneCountInString(content); n > MaxReplyRunes {
		return nil, fmt.Errorf("create reply on issue %s: content has %d runes, more than %d", issueUUID, n, MaxReplyRunes)
	}
	body := struct {
		IssueUUID       string   `json:"issueUUID"`
		Content         string   `json:"content"`
		AttachmentUUIDs []string `json:"attachmentUuids"`
		Extend          struct {
			Text string `json:"text"`
		} `json:"extend"`
	}{IssueUUID: issueUUID, Content: content, AttachmentUUIDs: []string{}}
	body.Extend.Text = content
	env, err := c.do(ctx, http.MethodPost, "issue/reply/create", nil, body)
	if err != nil {
		return nil, fmt.Errorf("create reply on issue %s: %w", issueUUID, err)
	}
	// Guance accepted the reply. An answer without a readable reply must not turn that
	// into an error: the caller would report a failure, and a retry would post it twice.
	var r Reply
	if ok, err := decodeContent(env, &r); err != nil || !ok {
		c.logger.Warn("guance accepted a reply but did not return it", "issue_uuid", issueUUID,
			"trace_id", c.redact(string(env.TraceID)))
		r = Reply{IssueUUID: issueUUID, Type: "reply", Content: content}
	}
	return &r, nil
}
