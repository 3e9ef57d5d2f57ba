package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"issuebot/bot/feishu"
	"issuebot/guance"
	"issuebot/store"
)

// Routes: which chats get an issue. A group binds a Guance channel from a level up
// (@bot bind <channel> [P0|P1|P2|P3]); an issue goes to every chat with a route that
// matches one of its channels and its level, each as its own live card, and only an
// issue no route takes goes to FEISHU_CHAT_ID. Routing reads the channels the issue
// list already returns, so more routes cost no Guance request.

// metaChannels is the store's name for the workspace's channel list (JSON), kept so
// that binding by name costs a Guance request only when the name is new.
const metaChannels = "guance.channels"

// channelsMaxAge is how old the kept channel list may be before an unknown name makes
// the bot ask Guance again.
const channelsMaxAge = 10 * time.Minute

// levelRank orders levels for routes: P0 (0) is the highest; an empty, unknown or
// custom level counts as P3.
func levelRank(l string) int {
	switch strings.ToUpper(strings.TrimSpace(l)) {
	case "P0", "SYSTEM_LEVEL_0":
		return 0
	case "P1", "SYSTEM_LEVEL_1":
		return 1
	case "P2", "SYSTEM_LEVEL_2":
		return 2
	}
	return 3
}

// routeIssue returns the chats an issue goes to: every chat with a matching route,
// else the default chat; never a chat the bot left.
func (b *Bot) routeIssue(ctx context.Context, is guance.Issue) ([]string, error) {
	rs, err := b.state.Routes(ctx)
	if err != nil {
		return nil, fmt.Errorf("read routes: %w", err)
	}
	def, _ := b.state.Meta(ctx, metaChannel+guance.DefaultChannelName)
	rank := levelRank(string(is.Level))
	var chats []string
	for _, r := range rs {
		in := r.ChannelUUID == def || r.ChannelUUID == guance.DefaultChannelName || slices.Contains(is.Extend.Channels, r.ChannelUUID)
		if in && rank <= levelRank(r.MinLevel) && !slices.Contains(chats, r.ChatID) {
			chats = append(chats, r.ChatID)
		}
	}
	// A route to a chat the bot has left (its goodbye still under way) takes nothing.
	live := chats[:0]
	for _, c := range chats {
		left, err := b.chatLeft(ctx, c)
		if err != nil {
			return nil, err
		}
		if !left {
			live = append(live, c)
		}
	}
	if len(live) == 0 && b.cfg.ChatID != "" {
		if left, err := b.chatLeft(ctx, b.cfg.ChatID); err != nil {
			return nil, err
		} else if !left {
			live = append(live, b.cfg.ChatID)
		}
	}
	return live, nil
}

// channelList is the workspace's channels as kept in the store.
type channelList struct {
	At       time.Time        `json:"at"`
	Channels []guance.Channel `json:"channels"`
}

// channels returns the workspace's channels, from the store when the kept list is
// young enough (or fresh is false), else from Guance.
func (b *Bot) channels(ctx context.Context, fresh bool) ([]guance.Channel, error) {
	var kept channelList
	if raw, err := b.state.Meta(ctx, metaChannels); err == nil && raw != "" {
		_ = json.Unmarshal([]byte(raw), &kept)
	}
	if len(kept.Channels) > 0 && (!fresh || b.now().Sub(kept.At) < channelsMaxAge) {
		return kept.Channels, nil
	}
	chans, err := b.guance.ListChannels(guance.WithPriority(ctx, guance.PriorityHigh))
	if err != nil {
		if len(kept.Channels) > 0 {
			return kept.Channels, nil
		}
		return nil, fmt.Errorf("list Guance channels: %w", err)
	}
	if raw, err := json.Marshal(channelList{At: b.now(), Channels: chans}); err == nil {
		if err := b.state.SetMeta(ctx, metaChannels, string(raw)); err != nil {
			b.logger.Warn("keep the channel list", "err", err)
		}
	}
	for _, c := range chans {
		if c.Name == guance.DefaultChannelName {
			if err := b.state.SetMeta(ctx, metaChannel+guance.DefaultChannelName, c.UUID); err != nil {
				b.logger.Warn("keep the default channel's uuid", "err", err)
			}
		}
	}
	return chans, nil
}

// findChannel finds a channel by name or uuid (asking Guance again when the kept list
// does not have it).
func (b *Bot) findChannel(ctx context.Context, ref string) (guance.Channel, []guance.Channel, error) {
	for _, fresh := range []bool{false, true} {
		chans, err := b.channels(ctx, fresh)
		if err != nil {
			return guance.Channel{}, nil, err
		}
		for _, c := range chans {
			if c.UUID == ref || strings.EqualFold(c.Name, ref) {
				return c, chans, nil
			}
		}
		if fresh {
			return guance.Channel{}, chans, nil
		}
	}
	return guance.Channel{}, nil, nil
}

// errNotAllowed is a bind or unbind by someone the group's rule does not let edit it.
var errNotAllowed = errors.New("only the group's owner and managers may change its routes")

// mayEdit applies the group's own rule: when only its owner and managers may edit its
// settings, only they may change its routes.
func (b *Bot) mayEdit(ctx context.Context, p answerJob) error {
	if p.Direct {
		return nil
	}
	info, err := b.feishu.ChatInfo(ctx, p.ChatID)
	if err != nil {
		return fmt.Errorf("read the group's settings: %w", err)
	}
	if !info.CanEdit(p.SenderOpenID) {
		return errNotAllowed
	}
	return nil
}

// routeCommand carries out bind and unbind, and returns the answer.
func (b *Bot) routeCommand(ctx context.Context, p answerJob) (string, error) {
	args := strings.Fields(p.Args)
	if p.Kind == answerBind && len(args) == 0 {
		return b.routesText(ctx, p.ChatID)
	}
	if p.Direct {
		return "请在群里 @机器人 使用 bind / unbind，路由属于群。\nUse bind / unbind in a group (with @bot): routes belong to a group.", nil
	}
	if err := b.mayEdit(ctx, p); errors.Is(err, errNotAllowed) {
		b.metrics.commandsRefused.Inc()
		return "⛔ 本群只允许群主和群管理员修改设置，路由未改变。\n⛔ This group lets only its owner and managers change its settings; the routes were not changed.", nil
	} else if err != nil {
		var fe *feishu.Error
		if errors.As(err, &fe) && !fe.Temporary() {
			return "⚠️ 无法读取本群设置（" + fe.Msg + "），路由未改变。\n⚠️ Cannot read this group's settings; the routes were not changed.", nil
		}
		return "", err
	}
	if p.Kind == answerUnbind {
		return b.unbind(ctx, p.ChatID, args)
	}
	return b.bind(ctx, p.ChatID, args)
}

// bind adds or replaces a route of the chat.
func (b *Bot) bind(ctx context.Context, chatID string, args []string) (string, error) {
	level := "P3"
	if len(args) > 1 {
		l := strings.ToUpper(args[1])
		if !slices.Contains([]string{"P0", "P1", "P2", "P3"}, l) {
			return "用法：bind <频道名或 uuid> [P0|P1|P2|P3]\nUsage: bind <channel name or uuid> [P0|P1|P2|P3]", nil
		}
		level = l
	}
	ch, all, err := b.findChannel(ctx, args[0])
	if err != nil {
		return "", err
	}
	if ch.UUID == "" {
		return unknownChannel(args[0], all), nil
	}
	if err := b.state.PutRoute(ctx, store.Route{ChatID: chatID, ChannelUUID: ch.UUID, MinLevel: level}); err != nil {
		return "", fmt.Errorf("store the route: %w", err)
	}
	b.refreshRouteCount(ctx)
	b.logger.Info("route bound", "chat_id", chatID, "channel", ch.Name, "channel_uuid", ch.UUID, "min_level", level)
	return fmt.Sprintf("✅ 已绑定：频道「%s」%s 及以上的新 Issue 会发到本群。\n✅ Bound: new issues of channel %q at %s or above come to this group.",
		ch.Name, level, ch.Name, level), nil
}

// unbind removes one route of the chat, or all of them.
func (b *Bot) unbind(ctx context.Context, chatID string, args []string) (string, error) {
	if len(args) == 0 {
		n, err := b.dropRoutes(ctx, chatID)
		if err != nil {
			return "", err
		}
		b.logger.Info("routes unbound", "chat_id", chatID, "count", n)
		return fmt.Sprintf("✅ 已解除本群的全部 %d 条路由。\n✅ Removed all %d routes of this group.", n, n), nil
	}
	ch, all, err := b.findChannel(ctx, args[0])
	if err != nil {
		return "", err
	}
	if ch.UUID == "" {
		return unknownChannel(args[0], all), nil
	}
	err = b.state.DeleteRoute(ctx, chatID, ch.UUID)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Sprintf("本群没有绑定频道「%s」。\nThis group has no route for channel %q.", ch.Name, ch.Name), nil
	}
	if err != nil {
		return "", fmt.Errorf("delete the route: %w", err)
	}
	b.refreshRouteCount(ctx)
	b.logger.Info("route unbound", "chat_id", chatID, "channel", ch.Name, "channel_uuid", ch.UUID)
	return fmt.Sprintf("✅ 已解除频道「%s」的绑定。\n✅ Channel %q is no longer routed here.", ch.Name, ch.Name), nil
}

// unknownChannel answers a channel name Guance does not know, listing those it does.
func unknownChannel(ref string, all []guance.Channel) string {
	names := make([]string, 0, len(all))
	for _, c := range all {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return fmt.Sprintf("❓ Guance 没有频道「%s」。现有频道：%s\n❓ Guance has no channel %q. Channels: %s",
		ref, strings.Join(names, "、"), ref, strings.Join(names, ", "))
}

// routesText lists a chat's routes for people.
func (b *Bot) routesText(ctx context.Context, chatID string) (string, error) {
	rs, err := b.state.Routes(ctx)
	if err != nil {
		return "", fmt.Errorf("read routes: %w", err)
	}
	names := map[string]string{}
	if chans, err := b.channels(ctx, false); err == nil {
		for _, c := range chans {
			names[c.UUID] = c.Name
		}
	}
	var lines []string
	for _, r := range rs {
		if r.ChatID == chatID {
			name := names[r.ChannelUUID]
			if name == "" {
				name = r.ChannelUUID
			}
			lines = append(lines, fmt.Sprintf("· %s ≥ %s", name, r.MinLevel))
		}
	}
	if len(lines) == 0 {
		if chatID != "" && chatID == b.cfg.ChatID {
			return "本群路由 / routes: 无；本群是默认群，接收没有路由的 Issue。\nNone; this is the default chat: it gets every issue no route takes.", nil
		}
		return "本群路由 / routes: 无。用 @机器人 bind <频道> [P0-P3] 绑定。\nNone. Bind one with @bot bind <channel> [P0-P3].", nil
	}
	return "本群路由 / routes of this group:\n" + strings.Join(lines, "\n"), nil
}

// refreshRouteCount sets the routes gauge.
func (b *Bot) refreshRouteCount(ctx context.Context) {
	if rs, err := b.state.Routes(ctx); err == nil {
		b.metrics.setRoutes(len(rs))
	}
}
