package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// Summary is the part of an issue record that the bot's periodic scans read: the watcher picks
// its next request from the summaries of every record on each turn, and each new-issue poll
// looks for deleted issues among them. The stores keep it apart from the record, in about 100
// bytes, and write it in the same transaction as the record, so a scan of 10 000 issues reads
// about a megabyte instead of every record.
type Summary struct {
	IssueUUID  string
	StatusType int
	Level      string
	// NameHash is NameHash(Name): whether the title changed, in 8 bytes.
	NameHash         uint64
	CreateAt         int64 // Guance createAt (unix s); 0 if unknown
	UpdateAt         int64
	ScannedUpdateAt  int64
	LastReplyAt      int64
	ScanResume       int
	Cards            int       // the record's cards (digest-only ones included)
	FirstSent        time.Time // see Issue.FirstSent
	LastSent         time.Time // see Issue.LastSent
	RepliesScannedAt time.Time
	LastActivity     time.Time
	ChangedAt        time.Time
	HintedAt         time.Time
	Refresh          bool
	Gone             bool
	// Behind is set when a posted card shows an older revision than CardRevision (a patch is due).
	Behind bool
}

// Summary returns the summary of the record.
func (is Issue) Summary() Summary {
	s := Summary{
		IssueUUID: is.IssueUUID, StatusType: is.StatusType, Level: is.Level, NameHash: NameHash(is.Name), CreateAt: is.CreateAt, UpdateAt: is.UpdateAt,
		ScannedUpdateAt: is.ScannedUpdateAt, LastReplyAt: is.LastReplyAt, ScanResume: is.ScanResume,
		Cards: len(is.Cards), FirstSent: is.FirstSent(), LastSent: is.LastSent(),
		RepliesScannedAt: is.RepliesScannedAt, LastActivity: is.LastActivity, ChangedAt: is.ChangedAt,
		HintedAt: is.HintedAt, Refresh: is.Refresh, Gone: is.Gone,
	}
	for _, c := range is.Cards {
		s.Behind = s.Behind || (c.MessageID != "" && c.PatchedRevision < is.CardRevision)
	}
	return s
}

// NameHash is the 64-bit FNV-1a hash of an issue's title.
func NameHash(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return h.Sum64()
}

// summaryVersion is the first byte of an encoded summary.
const summaryVersion = 1

// Flags of an encoded summary.
const (
	summaryRefresh = 1 << iota
	summaryGone
	summaryBehind
)

// encodeSummary encodes s without its uuid (the key names it): a version byte, a flags byte, the
// level (its length as a varint, then its bytes), the name hash (8 bytes), then varints — the ints,
// then the times as unix nanoseconds (0 for the zero time).
func encodeSummary(s Summary) []byte {
	var flags byte
	if s.Refresh {
		flags |= summaryRefresh
	}
	if s.Gone {
		flags |= summaryGone
	}
	if s.Behind {
		flags |= summaryBehind
	}
	b := make([]byte, 0, 96)
	b = append(b, summaryVersion, flags)
	b = binary.AppendUvarint(b, uint64(len(s.Level)))
	b = append(b, s.Level...)
	b = binary.BigEndian.AppendUint64(b, s.NameHash)
	for _, v := range []int64{int64(s.StatusType), s.CreateAt, s.UpdateAt, s.ScannedUpdateAt, s.LastReplyAt,
		int64(s.ScanResume), int64(s.Cards)} {
		b = binary.AppendVarint(b, v)
	}
	for _, t := range []time.Time{s.FirstSent, s.LastSent, s.RepliesScannedAt, s.LastActivity, s.ChangedAt, s.HintedAt} {
		b = binary.AppendVarint(b, unixNanos(t))
	}
	return b
}

// decodeSummary decodes what encodeSummary wrote for the issue uuid.
func decodeSummary(uuid string, b []byte) (Summary, error) {
	if len(b) < 2 || b[0] != summaryVersion {
		return Summary{}, fmt.Errorf("decode the summary of issue %s: unknown encoding", uuid)
	}
	flags, rest := b[1], b[2:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n+8 {
		return Summary{}, fmt.Errorf("decode the summary of issue %s: %w", uuid, errShortSummary)
	}
	level := string(rest[k : k+int(n)])
	nameHash := binary.BigEndian.Uint64(rest[k+int(n):])
	rest = rest[k+int(n)+8:]
	next := func() int64 {
		v, n := binary.Varint(rest)
		if n <= 0 {
			rest = nil
			return 0
		}
		rest = rest[n:]
		return v
	}
	ints := make([]int64, 7)
	for i := range ints {
		ints[i] = next()
	}
	times := make([]time.Time, 6)
	for i := range times {
		times[i] = fromUnixNanos(next())
	}
	if rest == nil {
		return Summary{}, fmt.Errorf("decode the summary of issue %s: %w", uuid, errShortSummary)
	}
	return Summary{
		IssueUUID: uuid, StatusType: int(ints[0]), Level: level, NameHash: nameHash, CreateAt: ints[1], UpdateAt: ints[2], ScannedUpdateAt: ints[3],
		LastReplyAt: ints[4], ScanResume: int(ints[5]), Cards: int(ints[6]),
		FirstSent: times[0], LastSent: times[1], RepliesScannedAt: times[2], LastActivity: times[3],
		ChangedAt: times[4], HintedAt: times[5],
		Refresh: flags&summaryRefresh != 0, Gone: flags&summaryGone != 0, Behind: flags&summaryBehind != 0,
	}, nil
}

var errShortSummary = errors.New("truncated")

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
