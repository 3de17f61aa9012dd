package broadcast

import (
	"log/slog"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// logLimiter keeps a burst of bad clients from flooding the log: a few
// lines a second get through, the rest are counted and the count goes out
// with the next line that does. Every event is still counted in Stats.
type logLimiter struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

func newLogLimiter(perSecond float64, burst int) *logLimiter {
	return &logLimiter{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

func (l *logLimiter) warn(log *slog.Logger, msg string, args ...any) {
	if !l.lim.Allow() {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Warn(msg, args...)
}
