package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/server"
)

const (
	stdioChunk    = 8 << 10 // source bytes per chunk_data line: keeps every line < 64 KiB after escaping
	stdioMaxTotal = 16 << 20
	stdioMaxParts = 4096
)

// serveStdio runs the control channel over stdin/stdout (§3.1.2) until stdin ends.
func serveStdio(ctx context.Context, srv *server.Server, in io.Reader, out io.Writer, log *slog.Logger) {
	var wmu sync.Mutex
	send := func(resp rpc.Response) {
		b, err := json.Marshal(resp)
		if err != nil {
			return
		}
		if len(b) <= 16<<10 {
			wmu.Lock()
			_, _ = out.Write(append(b, '\n'))
			wmu.Unlock()
			return
		}
		wmu.Lock()
		defer wmu.Unlock()
		enc := func(v any) { x, _ := json.Marshal(v); _, _ = out.Write(append(x, '\n')) }
		enc(map[string]any{"type": "chunk_start", "total_size": len(b)})
		for off := 0; off < len(b); {
			n := min(stdioChunk, len(b)-off)
			for n > 0 && off+n < len(b) && !utf8.RuneStart(b[off+n]) {
				n--
			}
			enc(map[string]any{"type": "chunk_data", "data": string(b[off : off+n]), "offset": off})
			off += n
		}
		enc(map[string]any{"type": "chunk_end"})
	}
	ctx = srv.ConnContext(ctx)
	defer srv.CloseConn(ctx)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	// The same in-flight cap and refusal as /rpc/ws.
	reqs := srv.NewRequests(ctx, send)
	defer reqs.Wait()
	var buf strings.Builder
	inChunk, total, parts := false, 0, 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") || !strings.HasSuffix(line, "}") {
			continue
		}
		var head struct {
			Type      string          `json:"type"`
			TotalSize *int            `json:"total_size"`
			Data      json.RawMessage `json:"data"` // a string in chunk_data, the RPC payload otherwise
			Offset    *int            `json:"offset"`
		}
		if json.Unmarshal([]byte(line), &head) != nil {
			continue
		}
		switch head.Type {
		case "chunk_start":
			if head.TotalSize == nil || *head.TotalSize < 0 || *head.TotalSize > stdioMaxTotal {
				log.Error("stdio control: invalid chunk_start, closing")
				return
			}
			inChunk, total, parts = true, *head.TotalSize, 0
			buf.Reset()
		case "chunk_data":
			var data string
			if json.Unmarshal(head.Data, &data) != nil {
				continue
			}
			parts++
			if !inChunk || head.Offset == nil || *head.Offset != buf.Len() || buf.Len()+len(data) > total || parts > stdioMaxParts {
				log.Error("stdio control: invalid chunk_data, closing")
				return
			}
			buf.WriteString(data)
		case "chunk_end":
			if !inChunk || buf.Len() != total {
				log.Error("stdio control: invalid chunk_end, closing")
				return
			}
			inChunk = false
			reqs.Handle([]byte(buf.String()))
		default:
			reqs.Handle([]byte(line))
		}
	}
}
