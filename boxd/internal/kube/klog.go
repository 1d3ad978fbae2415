package kube

import (
	"context"
	"log/slog"
	"strings"

	"k8s.io/klog/v2"
)

// RouteKlog sends what client-go logs through klog to log's handler (klog's global logger is
// the only state this sets). The errors client-go reports when boxd itself closed an exec
// stream — "Copying stdout failed … use of closed network connection", "Copying stdin failed …
// read/write on closed pipe", "Websocket Ping failed …" — are lowered to debug: they are the
// expected end of a stream boxd closed (a Pod deleted, a stream replaced, shutdown), and boxd
// logs a stream it lost itself.
func RouteKlog(log *slog.Logger) {
	klog.SetSlogLogger(slog.New(quietClosed{log.Handler()}))
}

// closedByUs are error texts that only a local close produces.
var closedByUs = []string{"use of closed network connection", "read/write on closed pipe"}

// quietClosed lowers records about connections closed on our side to debug.
type quietClosed struct{ h slog.Handler }

func (q quietClosed) Enabled(ctx context.Context, l slog.Level) bool { return q.h.Enabled(ctx, l) }

func (q quietClosed) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug && localClose(r) {
		r = r.Clone()
		r.Level = slog.LevelDebug
		if !q.h.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return q.h.Handle(ctx, r)
}

func (q quietClosed) WithAttrs(as []slog.Attr) slog.Handler { return quietClosed{q.h.WithAttrs(as)} }
func (q quietClosed) WithGroup(name string) slog.Handler    { return quietClosed{q.h.WithGroup(name)} }

// localClose: the record's message or one of its attributes (client-go passes the error as
// "err") says the connection was closed on this side.
func localClose(r slog.Record) bool {
	texts := []string{r.Message}
	r.Attrs(func(a slog.Attr) bool {
		texts = append(texts, a.Value.String())
		return true
	})
	for _, t := range texts {
		for _, c := range closedByUs {
			if strings.Contains(t, c) {
				return true
			}
		}
	}
	return false
}
