package wsync

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// rec is one crafted tar record.
type rec struct {
	name, content, link string
	typ                 byte
	mode                int64
	pax                 map[string]string
	size                int64 // -1: len(content)
}

func file(name, content string) rec {
	return rec{name: name, content: content, typ: tar.TypeReg, mode: 0o644, size: -1, pax: map[string]string{paxHash: sum(content)}}
}

// craft builds a stream as a peer would send it: magic, header, tar records, trailer
// (records = -1: the true count; omitTrailer: none at all).
func craft(t testing.TB, header any, recs []rec, records int, omitTrailer bool) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, writeMagic(&b))
	require.NoError(t, writeFrame(&b, header))
	if recs != nil {
		tw := tar.NewWriter(&b)
		for _, r := range recs {
			size := r.size
			if size < 0 {
				size = int64(len(r.content))
			}
			require.NoError(t, tw.WriteHeader(&tar.Header{Name: r.name, Typeflag: r.typ, Mode: r.mode, Size: size, Linkname: r.link,
				PAXRecords: r.pax, Format: tar.FormatPAX, ModTime: time.Unix(1700000000, 0)}))
			if r.typ == tar.TypeReg {
				_, _ = io.WriteString(tw, r.content) // a short or long body is what some cases want
			}
		}
		tw.Flush()
		if records != -2 {
			require.NoError(t, tw.Close())
		}
		if records < 0 {
			records = len(recs)
		}
	}
	if !omitTrailer {
		require.NoError(t, writeFrame(&b, trailer{Records: records}))
	}
	return b.Bytes()
}

// A sandbox end impersonated by the test: the real one never sends these streams, which is
// the point (a compromised sandbox could). boxd must refuse each one before anything
// changes on its side.
func TestHostRefusesHostilePullStreams(t *testing.T) {
	twoTrees := response{Tar: true, Trees: []respTree{{}, {}}}
	for _, tc := range []struct {
		name   string
		recs   []rec
		resp   *response
		count  int
		noTail bool
		limit  string
	}{
		{name: "dot-dot", recs: []rec{file("0/../escape", "x")}},
		{name: "dot-dot inside", recs: []rec{file("0/a/../../escape", "x")}},
		{name: "absolute after the tree index", recs: []rec{file("0//etc/passwd", "x")}},
		{name: "absolute", recs: []rec{file("/0/x", "x")}},
		{name: "no tree index", recs: []rec{file("x", "x")}},
		{name: "tree index out of range", recs: []rec{file("7/x", "x")}},
		{name: "tree index not canonical", recs: []rec{file("00/x", "x")}},
		{name: "trailing slash", recs: []rec{{name: "0/d/", typ: tar.TypeDir, mode: 0o755}}},
		{name: "into .git (skip list)", recs: []rec{file("0/.git/hooks/post-checkout", "#!/bin/sh\nid\n")}},
		{name: "into a nested mount", recs: []rec{file("0/.skills/demo/SKILL.md", "x")}},
		{name: "the nested mount's parent", recs: []rec{{name: "0/.skills", typ: tar.TypeSymlink, link: "/"}}},
		{name: "wsync's own names", recs: []rec{file("0/.boxd-wsync-session", "other")}},
		{name: "hard link", recs: []rec{{name: "0/h", typ: tar.TypeLink, link: "/etc/passwd"}}},
		{name: "character device", recs: []rec{{name: "0/null", typ: tar.TypeChar, mode: 0o666}}},
		{name: "fifo", recs: []rec{{name: "0/fifo", typ: tar.TypeFifo, mode: 0o644}}},
		{name: "setuid", recs: []rec{{name: "0/s", typ: tar.TypeReg, mode: 0o4755, content: "x", size: -1, pax: map[string]string{paxHash: sum("x")}}}},
		{name: "no hash", recs: []rec{{name: "0/f", typ: tar.TypeReg, mode: 0o644, content: "x", size: -1}}},
		{name: "wrong hash", recs: []rec{{name: "0/f", typ: tar.TypeReg, mode: 0o644, content: "x", size: -1, pax: map[string]string{paxHash: sum("y")}}}},
		{name: "unknown wsync record", recs: []rec{{name: "0/f", typ: tar.TypeReg, mode: 0o644, content: "x", size: -1, pax: map[string]string{paxHash: sum("x"), "WSYNC.exec": "id"}}}},
		{name: "bad stat key", recs: []rec{{name: "0/f", typ: tar.TypeReg, mode: 0o644, content: "x", size: -1, pax: map[string]string{paxHash: sum("x"), paxKey: "1:2"}}}},
		{name: "duplicate", recs: []rec{file("0/f", "x"), file("0/f", "y")}},
		{name: "cut short at a record boundary", recs: []rec{file("0/a", "a"), file("0/b", "b")}, count: 3},
		{name: "no trailer", recs: []rec{file("0/a", "a")}, noTail: true},
		{name: "unfinished tar", recs: []rec{file("0/a", "a")}, count: -2, noTail: true},
		{name: "deletion of a path never synced", resp: &response{Trees: []respTree{{Delete: []string{"../../etc"}}, {}}}},
		{name: "more trees than asked", resp: &response{Trees: []respTree{{}, {}, {}}}},
		{name: "a file over the per-file limit", recs: []rec{file("0/big", strings.Repeat("b", 11))}, limit: "pull_max_file_bytes"},
		{name: "more records than entries allowed", recs: []rec{file("0/a", "a"), file("0/b", "b"), file("0/c", "c"), file("0/d", "d"), file("0/e", "e")}, limit: "pull_max_entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, stdMounts, Options{Limits: Limits{PullMaxFileBytes: 10, PullMaxEntries: 4}})
			write(t, e.h("ws", "a"), "original", 0o644)
			e.push()
			outside := filepath.Join(filepath.Dir(e.host), "escape")
			before := snapshot(t, filepath.Dir(e.host))
			resp := tc.resp
			if resp == nil {
				resp = &twoTrees
			}
			count := tc.count
			if count == 0 {
				count = -1
			}
			stream := craft(t, resp, tc.recs, count, tc.noTail)
			if !resp.Tar {
				stream = craft(t, resp, nil, 0, false)
			}
			_, err := e.sess.Pull(t.Context(), func(ctx context.Context) (*Conn, error) {
				return e.dialWith(ctx, func(_ context.Context, in io.Reader, out io.Writer) error {
					_, _ = io.Copy(io.Discard, in)
					_, err := out.Write(stream)
					return err
				})
			})
			require.Error(t, err)
			t.Log(err)
			if tc.limit != "" {
				var le *LimitError
				require.ErrorAs(t, err, &le)
				assert.Equal(t, tc.limit, le.Limit)
			} else {
				require.ErrorIs(t, err, ErrInvalidStream)
				assert.Contains(t, err.Error(), "nothing was changed")
			}
			assert.Equal(t, before, snapshot(t, filepath.Dir(e.host)), "nothing changed on boxd's side, nothing outside it")
			assert.NoFileExists(t, outside)
			assert.Empty(t, stagingLeft(t, e.host))
			// The session still works afterwards.
			write(t, e.s("/workspace/a"), "sandbox!", 0o644)
			e.pull()
			assert.Equal(t, "sandbox!", read(t, e.h("ws", "a")))
		})
	}
}

// A stream that is valid but plants a symlink and then a file "through" it: the file is not
// written through the link (its directory is opened without following symlinks).
func TestHostNeverWritesThroughAPulledSymlink(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	e.push()
	outside := filepath.Join(filepath.Dir(e.host), "outside")
	require.NoError(t, os.MkdirAll(outside, 0o755))
	stream := craft(t, response{Tar: true, Trees: []respTree{{}, {}}}, []rec{
		{name: "0/ln", typ: tar.TypeSymlink, link: outside},
		file("0/ln/pwned", "x"),
	}, -1, false)
	rep, err := e.sess.Pull(t.Context(), func(ctx context.Context) (*Conn, error) {
		return e.dialWith(ctx, func(_ context.Context, in io.Reader, out io.Writer) error {
			_, _ = io.Copy(io.Discard, in)
			_, err := out.Write(stream)
			return err
		})
	})
	require.NoError(t, err)
	require.Len(t, rep.Trees[0].Errors, 1)
	assert.Equal(t, "ln/pwned", rep.Trees[0].Errors[0].Path)
	assert.NoFileExists(t, filepath.Join(outside, "pwned"))
	target, err := os.Readlink(e.h("ws", "ln"))
	require.NoError(t, err)
	assert.Equal(t, outside, target, "the symlink itself is carried, verbatim")
	assert.Empty(t, stagingLeft(t, e.host))
}

// Symlinks are carried as symlinks in both directions, whatever they point at, and never
// dereferenced: their targets' content never travels and nothing is written through them.
func TestSymlinksAreCarriedNeverFollowed(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	outsideHost := filepath.Join(filepath.Dir(e.host), "secret")
	write(t, filepath.Join(outsideHost, "key"), "host secret", 0o600)
	require.NoError(t, os.Symlink(outsideHost, e.h("ws", "abs")))
	require.NoError(t, os.Symlink("../../secret", e.h("ws", "rel")))
	require.NoError(t, os.MkdirAll(e.h("ws", "sub"), 0o755))
	write(t, e.h("ws", "sub/f"), "v1", 0o644)
	e.push()
	for name, target := range map[string]string{"abs": outsideHost, "rel": "../../secret"} {
		got, err := os.Readlink(e.s("/workspace/" + name))
		require.NoError(t, err)
		assert.Equal(t, target, got)
	}

	// The sandbox swaps a directory for a symlink to somewhere else in its file system, and
	// plants one to boxd's secret: boxd's next push writes nothing through either.
	outsideSbx := e.s("/elsewhere")
	require.NoError(t, os.MkdirAll(outsideSbx, 0o755))
	require.NoError(t, os.RemoveAll(e.s("/workspace/sub")))
	require.NoError(t, os.Symlink(outsideSbx, e.s("/workspace/sub")))
	write(t, e.h("ws", "sub/f"), "v2", 0o644)
	rep := e.push()
	require.Len(t, rep.Trees[0].Errors, 1)
	assert.Equal(t, "sub/f", rep.Trees[0].Errors[0].Path)
	assert.NoFileExists(t, filepath.Join(outsideSbx, "f"))

	// Pulled back, the sandbox's symlink does not replace boxd's directory (changed on both
	// sides): it lands beside it, as a symlink.
	require.NoError(t, os.Symlink(outsideHost+"/key", e.s("/workspace/leak")))
	rep = e.pull()
	assert.Equal(t, "v2", read(t, e.h("ws", "sub/f")))
	target, err := os.Readlink(e.h("ws", "sub"+stamp))
	require.NoError(t, err)
	assert.Equal(t, outsideSbx, target)
	target, err = os.Readlink(e.h("ws", "leak"))
	require.NoError(t, err)
	assert.Equal(t, outsideHost+"/key", target)
	assert.Equal(t, "host secret", read(t, filepath.Join(outsideHost, "key")))
	var paths []string
	for _, c := range rep.Trees[0].Conflicts {
		paths = append(paths, c.Path)
	}
	assert.ElementsMatch(t, []string{"sub", "sub/f"}, paths, "sub became a symlink in the sandbox, sub/f changed on boxd's side")
}

// The sandbox replaced a directory on the way to a mount with a symlink: the sandbox end
// refuses to open the mount through it.
func TestSandboxRootThroughASymlinkIsRefused(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("skill", "SKILL.md"), "s", 0o644)
	elsewhere := e.s("/elsewhere")
	require.NoError(t, os.MkdirAll(elsewhere, 0o755))
	require.NoError(t, os.MkdirAll(e.s("/workspace"), 0o755))
	require.NoError(t, os.Symlink(elsewhere, e.s("/workspace/.skills")))
	_, err := e.sess.Push(t.Context(), e.dial)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/workspace/.skills/demo")
	entries, err := os.ReadDir(elsewhere)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

// FIFOs, sockets and devices are skipped on both sides and never opened (opening a FIFO
// would block the sync); one in the way of a push is moved aside, not written into.
func TestSpecialFilesAreSkipped(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "a"), "a", 0o644)
	require.NoError(t, unix.Mkfifo(e.h("ws", "host.fifo"), 0o644))
	e.push()
	assert.NoFileExists(t, e.s("/workspace/host.fifo"))

	require.NoError(t, unix.Mkfifo(e.s("/workspace/sbx.fifo"), 0o644))
	l, err := net.Listen("unix", e.s("/workspace/sbx.sock"))
	require.NoError(t, err)
	defer l.Close()
	devErr := unix.Mknod(e.s("/workspace/sbx.dev"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
	rep := e.pull()
	reasons := map[string]string{}
	for _, s := range rep.Trees[0].Skipped {
		reasons[s.Path] = s.Reason
	}
	assert.Contains(t, reasons["sbx.fifo"], "FIFO")
	assert.Contains(t, reasons["sbx.sock"], "socket")
	if devErr == nil {
		assert.Contains(t, reasons["sbx.dev"], "character device")
	} else {
		t.Logf("no device node: %v (mknod needs CAP_MKNOD)", devErr)
	}
	for _, n := range []string{"sbx.fifo", "sbx.sock", "sbx.dev"} {
		_, err := os.Lstat(e.h("ws", n))
		assert.True(t, os.IsNotExist(err), n)
	}

	// A FIFO where boxd's side now has a file: moved aside unopened, the file takes its place.
	write(t, e.h("ws", "sbx.fifo"), "a file", 0o644)
	rep = e.push()
	assert.Equal(t, "a file", read(t, e.s("/workspace/sbx.fifo")))
	st, err := os.Lstat(e.s("/workspace/sbx.fifo" + stamp))
	require.NoError(t, err)
	assert.Equal(t, os.ModeNamedPipe, st.Mode().Type())
	assert.Len(t, rep.Trees[0].Conflicts, 1)
}

// Requests a compromised or buggy boxd could send (the fuzz target explores the rest): the
// sandbox end refuses each before writing anything, inside or outside its mounts.
func TestServeRefusesBadRequests(t *testing.T) {
	good := request{Op: "push", Session: "s1", Now: 1, Skip: DefaultSkip, Limits: DefaultLimits, Tar: true,
		Trees: []reqTree{{Root: "/workspace"}}}
	with := func(f func(r *request)) request {
		r := good
		r.Trees = append([]reqTree(nil), good.Trees...)
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		req  request
		recs []rec
	}{
		{"dot-dot name", good, []rec{file("0/../../outside/x", "x")}},
		{"absolute name", good, []rec{file("0//outside/x", "x")}},
		{"skip-list name", good, []rec{file("0/node_modules/x", "x")}},
		{"relative root", with(func(r *request) { r.Trees[0].Root = "workspace" }), []rec{file("0/x", "x")}},
		{"root with dot-dot", with(func(r *request) { r.Trees[0].Root = "/workspace/../outside" }), []rec{file("0/x", "x")}},
		{"root /", with(func(r *request) { r.Trees[0].Root = "/" }), []rec{file("0/x", "x")}},
		{"deletion with dot-dot", with(func(r *request) { r.Trees[0].Delete = []string{"../outside/keep"} }), []rec{file("0/x", "x")}},
		{"deleted and sent", with(func(r *request) { r.Trees[0].Delete = []string{"x"} }), []rec{file("0/x", "x")}},
		{"unknown op", with(func(r *request) { r.Op = "exec" }), []rec{file("0/x", "x")}},
		{"zero limits", with(func(r *request) { r.Limits = Limits{} }), []rec{file("0/x", "x")}},
		{"file over the push limit", with(func(r *request) { r.Limits.PushMaxFileBytes = 2 }), []rec{file("0/x", "xyz")}},
		{"exclude with dot-dot", with(func(r *request) { r.Trees[0].Exclude = []string{"../x"} }), []rec{file("0/x", "x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			sbx := filepath.Join(base, "sandbox")
			write(t, filepath.Join(base, "outside", "keep"), "keep", 0o644)
			require.NoError(t, os.MkdirAll(sbx, 0o755))
			before := snapshot(t, base)
			var out bytes.Buffer
			err := Serve(t.Context(), bytes.NewReader(craft(t, tc.req, tc.recs, -1, false)), &out, ServeOptions{Base: sbx})
			require.Error(t, err)
			t.Log(err)
			after := snapshot(t, base)
			delete(after, "sandbox/workspace") // the mount point itself may be made before the stream is read
			assert.Equal(t, before, after)
			resp, rerr := readResponse(bufioReader(out.Bytes()), false)
			require.NoError(t, rerr, "the refusal is sent to the peer")
			require.NotNil(t, resp.Error)
		})
	}
}
