package kube

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/klog/v2"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}

// TestRouteKlogLowersLocalCloses: what client-go reports through klog goes to boxd's slog
// handler, and the errors of a stream boxd closed itself are debug records (hidden at info).
func TestRouteKlogLowersLocalCloses(t *testing.T) {
	t.Cleanup(klog.ClearLogger)
	closedConn := fmt.Errorf("next reader: read tcp 127.0.0.1:40658->127.0.0.1:26443: %w", net.ErrClosed)
	cases := []struct {
		name  string
		log   func()
		shown bool
	}{
		{"Copying stdout failed on a connection boxd closed", func() {
			utilruntime.HandleErrorWithLogger(klog.Background(), closedConn, "Copying stdout failed")
		}, false},
		{"Copying stdin failed on a pipe boxd closed", func() {
			utilruntime.HandleErrorWithLogger(klog.Background(), io.ErrClosedPipe, "Copying stdin failed")
		}, false},
		{"Websocket Ping failed after the close", func() {
			klog.ErrorS(errors.New("set tcp 127.0.0.1:40658: use of closed network connection"), "Websocket Ping failed")
		}, false},
		{"a stream the server broke is an error", func() {
			utilruntime.HandleErrorWithLogger(klog.Background(), errors.New("read tcp: connection reset by peer"), "Copying stdout failed")
		}, true},
		{"other client-go errors stay errors", func() { klog.ErrorS(errors.New("too old resource version"), "Watch failed") }, true},
	}
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out lockedBuffer
		RouteKlog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level})))
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s", level, tc.name), func(t *testing.T) {
				tc.log()
				klog.Flush()
				got := out.take()
				switch {
				case tc.shown:
					assert.Contains(t, got, "level=ERROR")
				case level == slog.LevelDebug:
					assert.Contains(t, got, "level=DEBUG", "kept at debug")
				default:
					assert.Empty(t, got)
				}
			})
		}
	}
}
