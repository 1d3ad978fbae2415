package skills

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	return tm
}

func TestSkillFiles(t *testing.T) {
	st := newStore(t)
	sk, err := st.Create(Request{Name: set("demo"), Instructions: set("Do X")})
	require.NoError(t, err)
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("top secret"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(sk.PackageRoot, "escape")))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(sk.PackageRoot, "secret-link")))
	require.NoError(t, os.WriteFile(filepath.Join(sk.PackageRoot, "latin1.txt"), []byte("caf\xe9"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(sk.PackageRoot, "big.txt"), make([]byte, MaxTextBytes+1), 0o644))

	for _, tc := range []struct {
		name, path, content, err string
		wantPath                 string
		bytes                    int
	}{
		{name: "parent escape", path: "../x", err: "path must stay within the skill package root"},
		{name: "dotdot prefix name", path: "..foo", err: "path must stay within the skill package root"},
		{name: "absolute", path: "/etc/passwd", err: "path must be relative to the skill package root"},
		{name: "symlinked dir out", path: "escape/new.txt", err: "path must stay within the skill package root: escape/new.txt passes through a symbolic link, which skill file actions do not follow"},
		{name: "symlinked file out", path: "secret-link", err: "path must stay within the skill package root: secret-link passes through a symbolic link, which skill file actions do not follow"},
		{name: "too big", path: "x.txt", content: strings.Repeat("é", MaxTextBytes/2+1), err: "Skill file x.txt exceeds the 1048576-byte limit"},
		{name: "nested, parents created", path: "scripts/run.sh", content: "echo héllo\n", wantPath: "scripts/run.sh", bytes: len("echo héllo\n")},
		{name: "normalised", path: "./scripts//../notes.md", content: "n", wantPath: "notes.md", bytes: 1},
		{name: "directory", path: "scripts", content: "x", err: "[Errno 21] Is a directory: '" + filepath.Join(sk.PackageRoot, "scripts") + "'"},
	} {
		t.Run("write "+tc.name, func(t *testing.T) {
			res, err := st.WriteFile("demo", tc.path, tc.content)
			if tc.err != "" {
				assert.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantPath, res.Path)
			assert.Equal(t, tc.bytes, res.BytesWritten)
			read, err := st.ReadFile("demo", tc.path)
			require.NoError(t, err)
			assert.Equal(t, tc.content, read.Content)
		})
	}
	assert.NoFileExists(t, filepath.Join(outside, "new.txt"), "nothing was written outside the package")
	leftovers, err := filepath.Glob(filepath.Join(sk.PackageRoot, "scripts", ".*.tmp-*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "atomic writes leave no temporary files")

	for _, tc := range []struct{ name, path, err string }{
		{"latin-1", "latin1.txt", "Skill file latin1.txt is not valid UTF-8 text"},
		{"too big", "big.txt", "Skill file big.txt exceeds the 1048576-byte limit"},
		{"missing", "nope.txt", "Skill file not found: nope.txt"},
		{"directory", "scripts", "Skill file not found: scripts"},
		{"symlink out", "secret-link", "path must stay within the skill package root: secret-link passes through a symbolic link, which skill file actions do not follow"},
		{"unknown skill", "", ""},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			if tc.name == "unknown skill" {
				_, err := st.ReadFile("ghost", "SKILL.md")
				assert.EqualError(t, err, `Skill "ghost" not found`)
				return
			}
			_, err := st.ReadFile("demo", tc.path)
			assert.EqualError(t, err, tc.err)
		})
	}

	// Writing SKILL.md changes the metadata on the next listing.
	_, err = st.WriteFile("demo", "SKILL.md", "---\nname: demo\ndescription: rewritten\n---\nNew")
	require.NoError(t, err)
	got, err := st.Get("demo")
	require.NoError(t, err)
	assert.Equal(t, "rewritten", got.Description)
}

func TestListSkillFiles(t *testing.T) {
	st := newStore(t)
	sk, err := st.Create(Request{Name: set("demo")})
	require.NoError(t, err)
	for _, f := range []string{".hidden", "b.txt", "a.txt", "scripts/x.sh"} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(sk.PackageRoot, f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(sk.PackageRoot, f), []byte("12345"), 0o644))
	}
	require.NoError(t, os.Symlink("/etc/hostname", filepath.Join(sk.PackageRoot, "z-link")))
	names := func(l *FileListing) []string {
		var out []string
		for _, e := range l.Entries {
			out = append(out, e.Path)
		}
		return out
	}
	l, err := st.ListFiles("demo", ".", false, 200)
	require.NoError(t, err)
	assert.Equal(t, []string{"SKILL.md", "a.txt", "b.txt", "scripts", "z-link"}, names(l))
	assert.Equal(t, ".", l.BasePath)
	assert.False(t, l.Truncated)
	assert.True(t, l.Entries[3].IsDir)
	assert.Nil(t, l.Entries[3].Size)
	require.NotNil(t, l.Entries[1].Size)
	assert.EqualValues(t, 5, *l.Entries[1].Size)
	assert.False(t, l.Entries[4].IsDir, "a link leaving the package is described, not followed")

	l, err = st.ListFiles("demo", "", true, 2)
	require.NoError(t, err)
	assert.Equal(t, []string{".hidden", "SKILL.md"}, names(l))
	assert.True(t, l.Truncated)

	l, err = st.ListFiles("demo", "scripts/", false, 200)
	require.NoError(t, err)
	assert.Equal(t, "scripts", l.BasePath)
	assert.Equal(t, []string{"scripts/x.sh"}, names(l))

	for _, tc := range []struct {
		path string
		max  int
		err  string
	}{
		{".", 0, "max_entries must be a positive integer"},
		{"nope", 10, "Skill directory not found: nope"},
		{"a.txt", 10, "Skill directory not found: a.txt"},
		{"../..", 10, "path must stay within the skill package root"},
	} {
		_, err := st.ListFiles("demo", tc.path, false, tc.max)
		assert.EqualError(t, err, tc.err, tc.path)
	}
}

func TestResolveInPackage(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
	require.NoError(t, os.Symlink("/", filepath.Join(root, "rootlink")))
	require.NoError(t, os.Symlink("d", filepath.Join(root, "dlink")))
	for _, tc := range []struct {
		in, rel, err string
		dir          bool
	}{
		{in: "", rel: ".", dir: true},
		{in: " d ", rel: "d", dir: true},
		{in: "dlink", err: "path must stay within the skill package root: dlink passes through a symbolic link, which skill file actions do not follow", dir: true},
		{in: "dlink/x", err: "path must stay within the skill package root: dlink/x passes through a symbolic link, which skill file actions do not follow"},
		{in: "d/../d/x", rel: "d/x"},
		{in: "rootlink/etc", err: "path must stay within the skill package root: rootlink/etc passes through a symbolic link, which skill file actions do not follow"},
		{in: "d/../../x", err: "path must stay within the skill package root"},
		{in: "/d", err: "path must be relative to the skill package root"},
	} {
		_, rel, err := ResolveInPackage(root, tc.in, tc.dir)
		if tc.err != "" {
			assert.EqualError(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.rel, rel, tc.in)
	}
}
