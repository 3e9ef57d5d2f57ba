package guance

import (
	"encoding/json"
	"testing"
	"time"
)

func TestTime_UnmarshalJSON(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{`1690424627`, 1690424627},
		{`1686397319.9216194`, 1686397319},
		{`1.690424627e9`, 1690424627},
		{`"1690424627"`, 1690424627},
		{`" 1690424627.5 "`, 1690424627},
		{`1690424627000`, 1690424627},
		{`null`, 0},
		{`-1`, 0},
		{`"-1"`, 0},
		{`0`, 0},
		{`""`, 0},
	}
	for _, tt := range tests {
		var got Time
		if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		if got.Unix() != tt.want {
			t.Errorf("Unmarshal(%s).Unix() = %d, want %d", tt.in, got.Unix(), tt.want)
		}
		if got.IsZero() != (tt.want == 0) {
			t.Errorf("Unmarshal(%s).IsZero() = %v", tt.in, got.IsZero())
		}
	}
	for _, bad := range []string{`"soon"`, `{}`, `[]`, `true`} {
		var got Time
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("Unmarshal(%s) = %d, want an error", bad, got)
		}
	}
}

func TestTime_methods(t *testing.T) {
	tm := Time(1690424627)
	if got, want := tm.Time(), time.Unix(1690424627, 0); !got.Equal(want) {
		t.Errorf("Time() = %v, want %v", got, want)
	}
	if got := Time(-1).Time(); !got.IsZero() {
		t.Errorf("Time(-1).Time() = %v, want zero", got)
	}
	if got := TimeOf(time.Unix(1690424627, 999)); got != tm {
		t.Errorf("TimeOf = %d, want %d", got, tm)
	}
	if got := TimeOf(time.Time{}); !got.IsZero() {
		t.Errorf("TimeOf(zero) = %d", got)
	}
	if got, want := tm.String(), "2023-07-27T02:23:47Z"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for tm, want := range map[Time]string{1690424627: "1690424627", 0: "-1", -1: "-1"} {
		b, err := json.Marshal(tm)
		if err != nil || string(b) != want {
			t.Errorf("Marshal(%d) = %s, %v; want %s", tm, b, err, want)
		}
	}
}
