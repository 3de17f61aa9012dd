// Package lograte keeps a burst of bad clients from flooding the log.
package lograte

import (
	"context"
	"log/slog"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Limiter lets a few lines a second through; the rest are counted and the
// count goes out with the next line that does. Every event is still counted
// by whoever owns it: a suppressed line loses only its text.
type Limiter struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

// New returns a Limiter of perSecond lines with bursts of burst.
func New(perSecond float64, burst int) *Limiter {
	return &Limiter{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Warn logs msg at warning level unless over the rate.
func (l *Limiter) Warn(log *slog.Logger, msg string, args ...any) {
	l.Log(log, slog.LevelWarn, msg, args...)
}

// Error logs msg at error level unless over the rate.
func (l *Limiter) Error(log *slog.Logger, msg string, args ...any) {
	l.Log(log, slog.LevelError, msg, args...)
}

// Log logs msg at level unless over the rate.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if !l.lim.Allow() {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Log(context.Background(), level, msg, args...)
}
