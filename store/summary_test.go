package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummaryEncoding(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	full := Summary{IssueUUID: "issue_1", StatusType: 30, Level: "system_level_2", NameHash: NameHash("CPU 使用率过高"), CreateAt: 1767222000, UpdateAt: 1767225600,
		ScannedUpdateAt: 1767225500, LastReplyAt: -1, ScanResume: 3, Cards: 2, FirstSent: at,
		LastSent: at.Add(time.Hour), RepliesScannedAt: at.Add(2 * time.Hour), LastActivity: at.Add(3 * time.Hour),
		ChangedAt: at.Add(4 * time.Hour), HintedAt: at.Add(5 * time.Hour), Refresh: true, Gone: true, Behind: true}
	for _, want := range []Summary{{IssueUUID: "issue_0"}, full} {
		b := encodeSummary(want)
		got, err := decodeSummary(want.IssueUUID, b)
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
		if len(b) > 110 {
			t.Errorf("encoded summary is %d bytes, want at most 110", len(b))
		}
	}
	b := encodeSummary(full)
	for _, bad := range [][]byte{nil, {summaryVersion}, {9, 0}, b[:len(b)-1], b[:12], {summaryVersion, 0, 200, 1}} {
		if _, err := decodeSummary("issue_1", bad); err == nil {
			t.Errorf("decodeSummary(%v) = nil error, want one", bad)
		}
	}
}
