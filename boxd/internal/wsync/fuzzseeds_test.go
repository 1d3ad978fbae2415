//go:build fuzzseeds

package wsync

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzServe and FuzzPullResponse from real
// exchanges of a Session (go test -tags fuzzseeds -run TestWriteFuzzSeeds ./boxd/internal/wsync/; a tool, not a check: it exists only with that tag).
func TestWriteFuzzSeeds(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "README.md"), "hello", 0o644)
	write(t, e.h("ws", "bin/run.sh"), "#!/bin/sh\n", 0o755)
	require.NoError(t, os.Symlink("README.md", e.h("ws", "link")))
	write(t, e.h("skill", "SKILL.md"), "---\nname: demo\n---\n", 0o644)
	write(t, e.h("roskill", "SKILL.md"), "ro", 0o644)
	var reqs, resps [][]byte
	capture := func(ctx context.Context) (*Conn, error) {
		return e.dialWith(ctx, func(ctx context.Context, in io.Reader, out io.Writer) error {
			var req, resp bytes.Buffer
			err := Serve(ctx, io.TeeReader(in, &req), io.MultiWriter(out, &resp), ServeOptions{Base: e.sandbox})
			reqs, resps = append(reqs, req.Bytes()), append(resps, resp.Bytes())
			return err
		})
	}
	ctx := t.Context()
	_, err := e.sess.Push(ctx, capture)
	require.NoError(t, err)
	write(t, e.s("/workspace/out.txt"), "from the sandbox", 0o644)
	require.NoError(t, os.Remove(e.s("/workspace/link")))
	_, err = e.sess.Pull(ctx, capture)
	require.NoError(t, err)
	write(t, e.h("ws", "README.md"), "changed", 0o644)
	require.NoError(t, os.RemoveAll(e.h("ws", "bin")))
	_, err = e.sess.Push(ctx, capture)
	require.NoError(t, err)
	for name, seeds := range map[string][][]byte{"FuzzServe": append(reqs, hostileRequests(t)...), "FuzzPullResponse": append(resps, hostileResponses(t)...)} {
		dir := filepath.Join("testdata", "fuzz", name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s)))
			require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
		}
	}
}
