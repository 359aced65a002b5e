// Package ratelog bounds what a peer can make perfuse log: each kind of
// warning is written at most once per interval, with the number of its
// repeats that were held back since.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// Logger writes rate-limited warnings to an slog.Logger.
type Logger struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last    time.Time
	skipped int64
}

// New returns a Logger that writes each kind of warning to log at most
// once per every.
func New(log *slog.Logger, every time.Duration) *Logger {
	return &Logger{log: log, every: every, kinds: map[string]*kind{}}
}

// Warn logs msg with args unless a warning of the same kind was logged
// less than the interval ago. kind must come from a fixed set (a peer must
// not choose it), so the map stays small.
func (l *Logger) Warn(kindName, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	k := l.kinds[kindName]
	if k == nil {
		k = &kind{}
		l.kinds[kindName] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.every {
		k.skipped++
		l.mu.Unlock()
		return
	}
	skipped := k.skipped
	k.last, k.skipped = now, 0
	l.mu.Unlock()
	if skipped > 0 {
		args = append(args, "repeats_suppressed", skipped)
	}
	l.log.Warn(msg, args...)
}
