package guance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The tolerant scalar types below absorb Guance's type drift between endpoints and
// versions: a number may arrive as an int, a float or a numeric string, and anything may
// be null.

// flexInt decodes an integer from a JSON number (fractions dropped), a numeric string,
// or null (0).
type flexInt int64

// UnmarshalJSON decodes a tolerant integer.
func (n *flexInt) UnmarshalJSON(b []byte) error {
	f, ok, err := parseNumber(b)
	if err != nil {
		return err
	}
	if !ok {
		*n = 0
		return nil
	}
	*n = flexInt(f)
	return nil
}

// flexString decodes a string from a JSON string, number or bool; null is "".
type flexString string

// UnmarshalJSON decodes a tolerant string.
func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case isNull(b):
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case b[0] == '{' || b[0] == '[':
		return fmt.Errorf("cannot decode %.20s as a string", b)
	default:
		*s = flexString(b)
	}
	return nil
}

// flexBool decodes a bool from true/false, 0/1 (as numbers or strings) or null (false).
type flexBool bool

// UnmarshalJSON decodes a tolerant bool.
func (v *flexBool) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch string(b) {
	case "true", `"true"`:
		*v = true
		return nil
	case "false", `"false"`, "null", `""`:
		*v = false
		return nil
	}
	f, ok, err := parseNumber(b)
	if err != nil {
		return fmt.Errorf("cannot decode %.20s as a bool", b)
	}
	*v = flexBool(ok && f != 0)
	return nil
}

// parseNumber reads a JSON number or numeric string. ok is false for null and "".
func parseNumber(b []byte) (f float64, ok bool, err error) {
	b = bytes.TrimSpace(b)
	if isNull(b) {
		return 0, false, nil
	}
	s := string(b)
	if b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, false, err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, false, nil
		}
	}
	f, err = strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, fmt.Errorf("cannot decode %.30q as a number", s)
	}
	return f, true, nil
}

// PageInfo describes one page of an offset-paged list.
type PageInfo struct {
	// Count is the number of rows on this page.
	Count int `json:"count"`
	// PageIndex is the 1-based page number.
	PageIndex int `json:"pageIndex"`
	// PageSize is the requested page size.
	PageSize int `json:"pageSize"`
	// TotalCount is the number of rows on all pages; 0 when Guance did not say.
	TotalCount int `json:"totalCount"`
}

// UnmarshalJSON decodes a pageInfo whose numbers may be ints, floats, strings or null.
func (p *PageInfo) UnmarshalJSON(b []byte) error {
	var v struct {
		Count      flexInt `json:"count"`
		PageIndex  flexInt `json:"pageIndex"`
		PageSize   flexInt `json:"pageSize"`
		TotalCount flexInt `json:"totalCount"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode pageInfo: %w", err)
	}
	*p = PageInfo{Count: int(v.Count), PageIndex: int(v.PageIndex), PageSize: int(v.PageSize), TotalCount: int(v.TotalCount)}
	return nil
}

// decodePage reads a list's content in either shape Guance uses: a bare array of rows
// with pageInfo at the top level (reply/list as documented; issue/list as Guance's own
// scripts expect), or {data, pageInfo} (issue/list as documented), whose pageInfo
// falls back to the top level's.
func decodePage[T any](env *envelope) ([]T, *PageInfo, error) {
	content := bytes.TrimSpace(env.Content)
	if isNull(content) {
		return nil, env.PageInfo, nil
	}
	if content[0] == '[' {
		var rows []T
		if err := json.Unmarshal(content, &rows); err != nil {
			return nil, nil, fmt.Errorf("decode content: %w", err)
		}
		return rows, env.PageInfo, nil
	}
	var page struct {
		Data     []T       `json:"data"`
		PageInfo *PageInfo `json:"pageInfo"`
	}
	if err := json.Unmarshal(content, &page); err != nil {
		return nil, nil, fmt.Errorf("decode content: %w", err)
	}
	if page.PageInfo == nil {
		page.PageInfo = env.PageInfo
	}
	return page.Data, page.PageInfo, nil
}

// pageOf fills in what a page's pageInfo lacks: Guance may omit it or some of its fields.
func pageOf(pi *PageInfo, rows, pageIndex, pageSize int) PageInfo {
	var p PageInfo
	if pi != nil {
		p = *pi
	}
	if p.Count == 0 {
		p.Count = rows
	}
	if p.PageIndex == 0 {
		p.PageIndex = pageIndex
	}
	if p.PageSize == 0 {
		p.PageSize = pageSize
	}
	return p
}
