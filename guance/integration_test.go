package guance_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"issuebot/guance"
	"issuebot/guance/guancetest"
)

// newClient returns a client for the fake.
func newClient(t *testing.T, s *guancetest.Server, opts ...guance.Option) *guance.Client {
	t.Helper()
	c, err := guance.NewClient(s.URL, s.APIKey, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestClientAgainstFake_roundTrip(t *testing.T) {
	s := guancetest.NewServer(t)
	ops := s.AddChannel("ops")
	now := time.Now()
	is := s.AddIssue(guancetest.IssueSpec{
		Name: "db down", Description: "<span>db&nbsp;down</span>", Text: "db down", Level: 1,
		Channels: []string{"ops"}, SourceLink: "/x", CreateAt: now.Add(-time.Minute),
	})
	old := s.AddIssue(guancetest.IssueSpec{Name: "old", CreateAt: now.Add(-time.Hour)})
	s.AddHumanReply(is.UUID, "bob", "looking")
	c := newClient(t, s, guance.WithLimiter(nil))
	ctx := t.Context()

	chans, err := c.ListChannels(ctx)
	if err != nil || len(chans) != 2 || chans[0].Name != guance.DefaultChannelName || chans[1].UUID != ops.UUID {
		t.Fatalf("ListChannels = %+v, %v", chans, err)
	}
	levels, err := c.ListLevels(ctx)
	if err != nil || len(levels) != 4 || levels[0].UUID != "system_level_0" || !levels[0].IsDefault {
		t.Fatalf("ListLevels = %+v, %v", levels, err)
	}

	issues, err := c.ListAllIssues(ctx, guance.IssueQuery{
		ChannelUUID: guancetest.DefaultChannelUUID, Start: now.Add(-5 * time.Minute), End: now.Add(time.Minute),
	})
	if err != nil || len(issues) != 1 {
		t.Fatalf("ListAllIssues(window) = %+v, %v; want only %s (not %s)", issues, err, is.UUID, old.UUID)
	}
	got := issues[0]
	if got.UUID != is.UUID || got.Level != "system_level_1" || got.StatusType != guance.StatusOpen ||
		got.Text() != "db down" || got.Extend.SourceLink != "/x" || got.CreateAt.Unix() != is.CreateAt ||
		got.Deleted() || got.CreatorInfo == nil || got.CreatorInfo.Name != guancetest.DefaultPerson {
		t.Errorf("issue = %+v", got)
	}

	g, err := c.GetIssue(ctx, is.UUID)
	if err != nil || g.Name != "db down" {
		t.Fatalf("GetIssue = %+v, %v", g, err)
	}
	if _, err := c.GetIssue(ctx, "issue_nope"); !errors.Is(err, guance.ErrNotFound) {
		t.Errorf("GetIssue(unknown) = %v, want ErrNotFound", err)
	}

	r, err := c.CreateReply(ctx, is.UUID, "[飞书] 张三: 已重启 db-1")
	if err != nil || r.Creator != s.KeyID || !r.ByAPIKey() || r.CreatorInfo != nil {
		t.Fatalf("CreateReply = %+v, %v", r, err)
	}
	set, err := c.SetStatus(ctx, is.UUID, guance.StatusResolved)
	if err != nil || set.StatusType != guance.StatusResolved || set.Updator != s.KeyID {
		t.Fatalf("SetStatus = %+v, %v", set, err)
	}
	if bodies := s.ModifyBodies(); len(bodies) != 1 || string(bodies[0]) != `{"statusType":20}` {
		t.Errorf("modify bodies = %q, want exactly {\"statusType\":20}", bodies)
	}

	replies, pi, err := c.ListReplies(ctx, is.UUID, guance.ReplyListOptions{})
	if err != nil {
		t.Fatalf("ListReplies: %v", err)
	}
	var types []string
	for _, r := range replies {
		types = append(types, r.Type+":"+r.Creator)
	}
	want := []string{"change:" + s.KeyID, "reply:" + s.KeyID, "reply:acnt_0002", "change:acnt_0001"}
	if fmt.Sprint(types) != fmt.Sprint(want) || pi.TotalCount != 4 {
		t.Errorf("replies newest first = %v (%+v), want %v", types, pi, want)
	}

	s.DeleteIssue(old.UUID)
	s.BareArrayList = true
	issues, err = c.ListAllIssues(ctx, guance.IssueQuery{ChannelUUID: guancetest.DefaultChannelUUID, PageSize: 1})
	if err != nil || len(issues) != 2 {
		t.Fatalf("ListAllIssues(bare, pageSize 1) = %d issues, %v", len(issues), err)
	}
	deleted := 0
	for _, is := range issues {
		if is.Deleted() {
			deleted++
		}
	}
	if deleted != 1 {
		t.Errorf("deleted issues = %d, want 1", deleted)
	}
}

func TestClientAgainstFake_errors(t *testing.T) {
	s := guancetest.NewServer(t)
	bad, err := guance.NewClient(s.URL, "wrong-key", guance.WithLimiter(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.ListChannels(t.Context()); !errors.Is(err, guance.ErrBadKey) || guance.Retryable(err) {
		t.Errorf("bad key = %v, want ErrBadKey, not retryable", err)
	}

	lim := guance.NewWindowLimiter(18, time.Minute)
	c := newClient(t, s, guance.WithLimiter(lim))
	s.ThrottleFor(time.Hour)
	_, err = c.ListChannels(t.Context())
	if !errors.Is(err, guance.ErrThrottled) || errors.Is(err, guance.ErrBadKey) || !guance.Retryable(err) {
		t.Errorf("throttled = %v, want ErrThrottled, retryable, not ErrBadKey", err)
	}
	if st := lim.Stats(); st.PenalizedUntil.Before(time.Now().Add(50 * time.Second)) {
		t.Errorf("limiter not penalized after a throttle: %+v", st)
	}
	// While penalized, calls wait instead of hammering Guance.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.ListChannels(ctx); !errors.Is(err, context.DeadlineExceeded) || guance.Retryable(err) {
		t.Errorf("call while penalized = %v, want the ctx deadline", err)
	}
	if n := len(s.Requests()); n != 2 {
		t.Errorf("requests = %d, want 2 (none while penalized)", n)
	}

	s.Down(true)
	c2 := newClient(t, s, guance.WithLimiter(nil))
	if _, err := c2.ListLevels(t.Context()); !guance.Retryable(err) {
		t.Errorf("down = %v, want retryable", err)
	}
}

// TestClientAgainstFake_burstStaysUnderBudget runs a concurrent burst of reads and
// writes through a client limited to 18 per window against a fake that throttles above
// 20 per window: the fake must never throttle. The window is 1 s to keep the test short.
func TestClientAgainstFake_burstStaysUnderBudget(t *testing.T) {
	const window = time.Second
	s := guancetest.NewServer(t, guancetest.WithLimit(20, window))
	var ids []string
	for i := range 4 {
		ids = append(ids, s.AddIssue(guancetest.IssueSpec{Name: fmt.Sprint("issue ", i)}).UUID)
	}
	c := newClient(t, s, guance.WithLimiter(guance.NewWindowLimiter(18, window)))

	g, ctx := errgroup.WithContext(t.Context())
	for w := range 8 {
		g.Go(func() error {
			for i := range 6 {
				id := ids[(w+i)%len(ids)]
				var err error
				switch i % 4 {
				case 0:
					_, _, err = c.ListIssues(guance.WithPriority(ctx, guance.PriorityLow), guance.IssueQuery{ChannelUUID: guancetest.DefaultChannelUUID})
				case 1:
					_, _, err = c.ListReplies(guance.WithPriority(ctx, guance.PriorityLow), id, guance.ReplyListOptions{})
				case 2:
					_, err = c.CreateReply(guance.WithPriority(ctx, guance.PriorityHigh), id, fmt.Sprint("from worker ", w))
				case 3:
					_, err = c.GetIssue(ctx, id)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("burst: %v", err)
	}
	if got := s.Throttled(); got != 0 {
		t.Errorf("fake throttled %d requests", got)
	}
	if got := s.MaxInWindow(window); got > 18 {
		t.Errorf("MaxInWindow = %d, want at most 18", got)
	}
	if got := len(s.Requests()); got != 48 {
		t.Errorf("requests = %d, want 48 (no retries, no extras)", got)
	}
}
