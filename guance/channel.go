package guance

import (
	"context"
	"fmt"
	"net/http"
)

// DefaultChannelName is the name of the channel every workspace has, which holds every
// issue (the UI calls it 全部/All).
const DefaultChannelName = "default"

// Channel is an issue channel (频道).
type Channel struct {
	ID            int64  `json:"id"`
	UUID          string `json:"uuid"`
	Name          string `json:"name"`
	Description   string `json:"description"`
	WorkspaceUUID string `json:"workspaceUUID"`
}

// ListChannels returns the workspace's channels, the default one included. Guance
// returns channels with deleteAt set too, the default one among them, so deletion is not
// inferred from it.
//
// Guance OpenAPI: GET /api/v1/channel/quick_list
// (guance-docs: zh/open-api/channel/quick-list.md).
func (c *Client) ListChannels(ctx context.Context) ([]Channel, error) {
	env, err := c.do(ctx, http.MethodGet, "channel/quick_list", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	var chans []Channel
	if _, err := decodeContent(env, &chans); err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	return chans, nil
}
