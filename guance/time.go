package guance

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Time is a Guance timestamp in Unix seconds. It decodes tolerantly: an int, a float
// (1686397319.92; the fraction is dropped), a numeric string, null, or -1. Zero means
// "not set", and so does any negative value (Guance writes deleteAt -1 for a live object,
// updateAt -1 for "never updated"); they decode to 0. Values of 10^12 and more are taken
// as milliseconds. Time marshals back to an integer, -1 when not set, as Guance does.
type Time int64

// TimeOf returns t as a Time; the zero time.Time gives the zero Time.
func TimeOf(t time.Time) Time {
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return Time(t.Unix())
}

// Unix returns the timestamp in Unix seconds, 0 when not set.
func (t Time) Unix() int64 {
	if t <= 0 {
		return 0
	}
	return int64(t)
}

// IsZero reports whether the timestamp is not set.
func (t Time) IsZero() bool { return t <= 0 }

// Time returns the timestamp as a time.Time, the zero time.Time when not set.
func (t Time) Time() time.Time {
	if t <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(t), 0)
}

// String formats the timestamp in RFC 3339, or "-" when not set.
func (t Time) String() string {
	if t <= 0 {
		return "-"
	}
	return t.Time().UTC().Format(time.RFC3339)
}

// UnmarshalJSON decodes a tolerant Unix timestamp.
func (t *Time) UnmarshalJSON(b []byte) error {
	f, ok, err := parseNumber(b)
	if err != nil {
		return fmt.Errorf("decode time: %w", err)
	}
	switch {
	case !ok || f <= 0:
		*t = 0
	case f >= 1e12:
		*t = Time(math.Floor(f / 1000))
	default:
		*t = Time(math.Floor(f))
	}
	return nil
}

// MarshalJSON encodes the timestamp as integer seconds, -1 when not set.
func (t Time) MarshalJSON() ([]byte, error) {
	if t <= 0 {
		return []byte("-1"), nil
	}
	return strconv.AppendInt(nil, int64(t), 10), nil
}
