package guance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// Level is an issue level: a system level (system_level_0..3 = P0..P3, P3 shown as
// 未知/Unknown) or a custom one (issl_…).
type Level struct {
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	Color       string `json:"color"`
	Description string `json:"description"`
	IsDefault   bool   `json:"isDefault"`
}

// UnmarshalJSON decodes a level whose isDefault may be a bool, a number or null.
func (l *Level) UnmarshalJSON(b []byte) error {
	type plain Level
	var v struct {
		plain
		IsDefault flexBool `json:"isDefault"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*l = Level(v.plain)
	l.IsDefault = bool(v.IsDefault)
	return nil
}

// ListLevels returns the workspace's levels, system and custom (not the platform-wide
// ones configured in the admin backend). They change rarely: cache them.
//
// Guance OpenAPI: GET /api/v1/issue-level/list
// (guance-docs: zh/open-api/issue/level-list.md).
func (c *Client) ListLevels(ctx context.Context) ([]Level, error) {
	env, err := c.do(ctx, http.MethodGet, "issue-level/list", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("list levels: %w", err)
	}
	var levels []Level
	if _, err := decodeContent(env, &levels); err != nil {
		return nil, fmt.Errorf("list levels: %w", err)
	}
	return levels, nil
}
