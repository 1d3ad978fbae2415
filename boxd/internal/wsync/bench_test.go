package wsync

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// benchTree fills the workspace with 1000 files of 4 KiB in 20 directories (4 MB), plus a
// skill of 10 files, the shape of a small project.
func benchTree(b *testing.B) *env {
	e := newEnv(b, stdMounts[:2], Options{})
	content := strings.Repeat("0123456789abcdef", 256)
	for d := range 20 {
		for f := range 50 {
			write(b, e.h("ws", fmt.Sprintf("pkg%02d/file%02d.py", d, f)), content, 0o644)
		}
	}
	for f := range 10 {
		write(b, e.h("skill", fmt.Sprintf("f%d.md", f)), content, 0o644)
	}
	return e
}

func report(b *testing.B, e *env) {
	_, req, rsp := e.counters()
	b.ReportMetric(float64(req)/float64(b.N), "req-B/op")
	b.ReportMetric(float64(rsp)/float64(b.N), "resp-B/op")
}

// The first push of the whole tree into an empty sandbox (a new session).
func BenchmarkPushFull1000(b *testing.B) {
	e := benchTree(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		require.NoError(b, os.RemoveAll(e.sandbox))
		require.NoError(b, os.MkdirAll(e.sandbox, 0o755))
		s, err := NewSession(e.trees, Options{NoFsync: true, Logger: e.sess.log})
		require.NoError(b, err)
		b.StartTimer()
		rep, err := s.Push(b.Context(), e.dial)
		require.NoError(b, err)
		require.Equal(b, 1000, rep.Trees[0].Files)
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	report(b, e)
}

// A push after one file changed: the host scan of 1010 files, one file sent.
func BenchmarkPushIncremental1of1000(b *testing.B) {
	e := benchTree(b)
	e.push()
	e.pull() // the sandbox's stat keys are learned once
	e.resetCounters()
	b.ResetTimer()
	for i := range b.N {
		write(b, e.h("ws", "pkg07/file07.py"), fmt.Sprintf("version %d", i), 0o644)
		rep, err := e.sess.Push(b.Context(), e.dial)
		require.NoError(b, err)
		require.Equal(b, 1, rep.Trees[0].Files)
	}
	report(b, e)
}

// A push when nothing changed: the host scan only, no exchange.
func BenchmarkPushNoChange1000(b *testing.B) {
	e := benchTree(b)
	e.push()
	e.resetCounters()
	b.ResetTimer()
	for range b.N {
		rep, err := e.sess.Push(b.Context(), e.dial)
		require.NoError(b, err)
		require.False(b, rep.Exchanged)
	}
	report(b, e)
}

// A pull after a command that changed nothing: the base goes to the sandbox, the sandbox
// scans, nothing comes back.
func BenchmarkPullNoChange1000(b *testing.B) {
	e := benchTree(b)
	e.push()
	e.pull()
	e.resetCounters()
	b.ResetTimer()
	for range b.N {
		_, err := e.sess.Pull(b.Context(), e.dial)
		require.NoError(b, err)
	}
	report(b, e)
}

// A pull after a command that changed one file, written on boxd's side with fsync.
func BenchmarkPullOneFile1000Fsync(b *testing.B) {
	e := benchTree(b)
	e.sess.fsync = true
	e.push()
	e.pull()
	e.resetCounters()
	b.ResetTimer()
	for i := range b.N {
		write(b, e.s("/workspace/pkg03/file03.py"), fmt.Sprintf("version %d", i), 0o644)
		rep, err := e.sess.Pull(b.Context(), e.dial)
		require.NoError(b, err)
		require.Equal(b, 1, rep.Trees[0].Files)
	}
	report(b, e)
}
