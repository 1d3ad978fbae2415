package agent

import (
	"bytes"
	"sync"
)

// HeadBuffer keeps the first Limit bytes written to it (2048 when Limit is 0) and discards the
// rest: what an agent stream or a helper exec wrote on stderr, for error messages. Both
// backends that run the agent (docker, kube) use it. Safe for concurrent use.
type HeadBuffer struct {
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write keeps what fits and always reports the whole of p as written.
func (w *HeadBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	limit := w.Limit
	if limit == 0 {
		limit = 2048
	}
	if room := limit - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// String returns the bytes kept.
func (w *HeadBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
