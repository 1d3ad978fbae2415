package wsync

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const stamp = ".sandbox-conflict-20260102T150405Z"

// A path changed on both sides since the last sync keeps both versions, whichever sync
// finds it; the report names it; the next syncs converge with nothing lost.
func TestConflictsKeepBothVersions(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change both sides after a first push of f.txt = "base"
		change func(e *env)
		// first is the sync that meets the conflict
		first func(e *env) *Report
		// want after first, then after the next push and pull, on each side
		wantConflict Conflict
		host, sbx    map[string]string // path → content ("" = absent) after first
		final        map[string]string // on both sides after push+pull
	}{
		{
			name: "both changed, found by the pull",
			change: func(e *env) {
				write(t, e.h("ws", "f.txt"), "host", 0o644)
				write(t, e.s("/workspace/f.txt"), "sandbox", 0o644)
			},
			first:        (*env).pull,
			wantConflict: Conflict{Path: "f.txt", Copy: "f.txt" + stamp},
			host:         map[string]string{"f.txt": "host", "f.txt" + stamp: "sandbox"},
			sbx:          map[string]string{"f.txt": "sandbox", "f.txt" + stamp: ""},
			final:        map[string]string{"f.txt": "host", "f.txt" + stamp: "sandbox"},
		},
		{
			name: "both changed, found by the push (a background process wrote after the pull)",
			change: func(e *env) {
				write(t, e.h("ws", "f.txt"), "host", 0o644)
				write(t, e.s("/workspace/f.txt"), "sandbox", 0o644)
			},
			first:        (*env).push,
			wantConflict: Conflict{Path: "f.txt", Copy: "f.txt" + stamp},
			host:         map[string]string{"f.txt": "host", "f.txt" + stamp: ""},
			sbx:          map[string]string{"f.txt": "host", "f.txt" + stamp: "sandbox"},
			final:        map[string]string{"f.txt": "host", "f.txt" + stamp: "sandbox"},
		},
		{
			name: "both created the same new file",
			change: func(e *env) {
				write(t, e.h("ws", "new.txt"), "host", 0o644)
				write(t, e.s("/workspace/new.txt"), "sandbox", 0o644)
			},
			first:        (*env).push,
			wantConflict: Conflict{Path: "new.txt", Copy: "new.txt" + stamp},
			host:         map[string]string{"new.txt": "host"},
			sbx:          map[string]string{"new.txt": "host", "new.txt" + stamp: "sandbox"},
			final:        map[string]string{"f.txt": "base", "new.txt": "host", "new.txt" + stamp: "sandbox"},
		},
		{
			name: "deleted on the host, changed in the sandbox",
			change: func(e *env) {
				require.NoError(t, os.Remove(e.h("ws", "f.txt")))
				write(t, e.s("/workspace/f.txt"), "sandbox", 0o644)
			},
			first:        (*env).push,
			wantConflict: Conflict{Path: "f.txt"},
			host:         map[string]string{"f.txt": ""},
			sbx:          map[string]string{"f.txt": "sandbox"},
			final:        map[string]string{"f.txt": "sandbox"},
		},
		{
			name: "deleted in the sandbox, changed on the host",
			change: func(e *env) {
				write(t, e.h("ws", "f.txt"), "host", 0o644)
				require.NoError(t, os.Remove(e.s("/workspace/f.txt")))
			},
			first:        (*env).pull,
			wantConflict: Conflict{Path: "f.txt"},
			host:         map[string]string{"f.txt": "host"},
			sbx:          map[string]string{"f.txt": ""},
			final:        map[string]string{"f.txt": "host"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, stdMounts, Options{})
			write(t, e.h("ws", "f.txt"), "base", 0o644)
			e.push()
			tc.change(e)
			rep := tc.first(e)
			require.Len(t, rep.Trees[0].Conflicts, 1)
			got := rep.Trees[0].Conflicts[0]
			assert.Equal(t, tc.wantConflict.Path, got.Path)
			assert.Equal(t, tc.wantConflict.Copy, got.Copy)
			assert.NotEmpty(t, got.Note)
			assert.Contains(t, rep.Notice(), "/workspace/"+got.Path)
			check := func(side string, want map[string]string, p func(string) string) {
				for rel, content := range want {
					if content == "" {
						assert.NoFileExists(t, p(rel), side)
						continue
					}
					assert.Equal(t, content, read(t, p(rel)), side+" "+rel)
				}
			}
			hostPath := func(rel string) string { return e.h("ws", rel) }
			sbxPath := func(rel string) string { return e.s("/workspace/" + rel) }
			check("host", tc.host, hostPath)
			check("sandbox", tc.sbx, sbxPath)

			e.push()
			e.pull()
			rep = e.push()
			assert.Empty(t, rep.Conflicts(), "converged")
			check("host", tc.final, hostPath)
			check("sandbox", tc.final, sbxPath)
			assert.Equal(t, snapshot(t, e.h("ws", "")), without(snapshot(t, e.s("/workspace")), ".skills"))
		})
	}
}

// The sandbox turned a path boxd's side has as a file into a directory with content: the
// file stays, the directory's content is not lost (moved aside in the sandbox by the next
// push, then brought back under the conflict name).
func TestTypeConflictLosesNothing(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "keep"), "k", 0o644)
	e.push()
	write(t, e.h("ws", "x"), "host file", 0o644)
	write(t, e.s("/workspace/x/y"), "sandbox file in a directory", 0o644)
	rep := e.pull()
	assert.Len(t, rep.Trees[0].Conflicts, 1)
	assert.Equal(t, "host file", read(t, e.h("ws", "x")))
	e.push()
	e.pull()
	assert.Equal(t, "host file", read(t, e.h("ws", "x")))
	assert.Equal(t, "host file", read(t, e.s("/workspace/x")))
	assert.Equal(t, "sandbox file in a directory", read(t, e.h("ws", "x"+stamp+"/y")))
	assert.Equal(t, snapshot(t, e.h("ws", "")), without(snapshot(t, e.s("/workspace")), ".skills"))
}
