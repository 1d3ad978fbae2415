package wsync

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzServe: whatever request reaches the sandbox end, Serve neither panics nor hangs, and
// never creates, changes or removes anything outside its Base (a sibling directory and a
// file planted beside it stay as they were). The seed corpus (testdata/fuzz/FuzzServe) holds
// real requests captured from a Session (TestWriteFuzzSeeds) and crafted hostile ones.
func FuzzServe(f *testing.F) {
	for _, seed := range hostileRequests(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		base := t.TempDir()
		sbx := filepath.Join(base, "sandbox")
		require.NoError(t, os.MkdirAll(filepath.Join(sbx, "workspace"), 0o755))
		write(t, filepath.Join(base, "outside", "keep"), "keep", 0o644)
		require.NoError(t, os.Symlink(filepath.Join(base, "outside"), filepath.Join(sbx, "workspace", "ln")))
		before := snapshot(t, filepath.Join(base, "outside"))
		var out bytes.Buffer
		_ = Serve(context.Background(), bytes.NewReader(stream), &out, ServeOptions{Base: sbx})
		assert.Equal(t, before, snapshot(t, filepath.Join(base, "outside")))
		entries, err := os.ReadDir(base)
		require.NoError(t, err)
		assert.Len(t, entries, 2, "nothing beside the sandbox and the outside directory")
		assert.LessOrEqual(t, out.Len(), 2*len(stream)+64<<10, "the response is bounded by what the sandbox holds")
	})
}

// FuzzPullResponse: whatever a sandbox answers to a pull, boxd neither panics nor hangs,
// writes nothing outside the session's host directories, and leaves no staging file.
func FuzzPullResponse(f *testing.F) {
	for _, seed := range hostileResponses(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		e := newEnv(t, stdMounts[:2], Options{Limits: Limits{PullMaxEntries: 64, PullMaxFileBytes: 4 << 10, PullMaxTotalBytes: 16 << 10}})
		write(t, e.h("ws", "a"), "a", 0o644)
		outside := filepath.Join(filepath.Dir(e.host), "outside")
		write(t, filepath.Join(outside, "keep"), "keep", 0o644)
		require.NoError(t, os.Symlink(outside, e.h("ws", "ln")))
		e.push()
		before := snapshot(t, outside)
		_, _ = e.sess.Pull(context.Background(), func(ctx context.Context) (*Conn, error) {
			return e.dialWith(ctx, func(_ context.Context, in io.Reader, out io.Writer) error {
				_, _ = io.Copy(io.Discard, in)
				_, err := out.Write(stream)
				return err
			})
		})
		assert.Equal(t, before, snapshot(t, outside))
		assert.Empty(t, stagingLeft(t, e.host))
	})
}

func hostileRequests(tb testing.TB) [][]byte {
	push := request{Op: "push", Session: "s1", Now: 1, Skip: DefaultSkip, Limits: DefaultLimits, Tar: true, Trees: []reqTree{{Root: "/workspace"}}}
	pull := request{Op: "pull", Session: "s1", Now: 1, Skip: DefaultSkip, Limits: DefaultLimits, Trees: []reqTree{{Root: "/workspace", Synced: true,
		Base: []wireEntry{{Entry: Entry{Path: "a", Kind: KindFile, Mode: 0o644, Size: 1, Hash: sum("a")}}}}}}
	return [][]byte{
		craft(tb, push, []rec{file("0/../outside/x", "x")}, -1, false),
		craft(tb, push, []rec{file("0/ln/x", "x")}, -1, false),
		craft(tb, push, []rec{{name: "0/ln", typ: tar.TypeSymlink, link: "/"}, file("0/ln/x", "x")}, -1, false),
		craft(tb, push, []rec{{name: "0/d", typ: tar.TypeDir, mode: 0o755}, file("0/d/x", "x")}, -1, false),
		craft(tb, push, []rec{{name: "0/h", typ: tar.TypeLink, link: "../outside/keep"}}, -1, false),
		craft(tb, pull, nil, 0, false),
	}
}

func hostileResponses(tb testing.TB) [][]byte {
	resp := response{Tar: true, Trees: []respTree{{}, {}}}
	return [][]byte{
		craft(tb, resp, []rec{file("0/../outside/x", "x")}, -1, false),
		craft(tb, resp, []rec{file("0/ln/x", "x")}, -1, false),
		craft(tb, resp, []rec{{name: "0/ln2", typ: tar.TypeSymlink, link: "/"}, file("0/ln2/x", "x")}, -1, false),
		craft(tb, resp, []rec{{name: "0/d", typ: tar.TypeDir, mode: 0o755}, file("0/d/x", "x"), file("1/SKILL.md", "s")}, -1, false),
		craft(tb, response{Trees: []respTree{{Delete: []string{"a"}}, {}}}, nil, 0, false),
	}
}
