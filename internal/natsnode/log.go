package natsnode

import (
	"context"
	"fmt"
	"log/slog"
)

// slogAdapter sends nats-server's log to a slog.Logger, so that its fatal
// messages (which it logs instead of returning) are never lost.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) log(level slog.Level, format string, v []any) {
	if !a.l.Enabled(context.Background(), level) {
		return
	}
	a.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
}

func (a slogAdapter) Noticef(format string, v ...any) { a.log(slog.LevelInfo, format, v) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.log(slog.LevelError, format, v) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.log(slog.LevelDebug, format, v) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.log(slog.LevelDebug-4, format, v) }

// Fatalf logs at error level with fatal=true. Unlike nats-server's own
// logger it does not exit the process: Start reports the failure.
func (a slogAdapter) Fatalf(format string, v ...any) {
	a.l.Log(context.Background(), slog.LevelError, fmt.Sprintf(format, v...), "component", "nats-server", "fatal", true)
}
