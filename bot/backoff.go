package bot

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing delays with ±50 % jitter, so that replicas
// and retries of many items do not hit a recovering service in lockstep.
type backoff struct {
	base, max time.Duration
	n         int
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max} }

func (b *backoff) next() time.Duration {
	d := b.base << min(b.n, 30)
	if d <= 0 || d > b.max {
		d = b.max
	}
	b.n++
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// after returns the jittered delay before attempt n (1-based) without keeping state.
func (b *backoff) after(n int) time.Duration {
	b.n = max(n-1, 0)
	return b.next()
}
