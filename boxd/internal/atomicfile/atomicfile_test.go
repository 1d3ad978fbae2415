package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, tc := range []struct {
		data string
		perm os.FileMode
	}{{"one", 0o644}, {"two, longer", 0o555}} {
		require.NoError(t, Write(p, []byte(tc.data), tc.perm))
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, tc.data, string(b))
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, tc.perm, st.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left")

	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	assert.Error(t, Write(filepath.Join(dir, "d"), []byte("x"), 0o644), "a directory is not replaced")
	assert.Error(t, Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644))
	entries, err = os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "failed writes leave nothing behind")
}

// WriteAt works through the directory handle only: the directory renamed away and replaced by
// a symlink to elsewhere still receives the file, a symlink at the name is replaced (its
// target untouched), and a name that is not one component is refused.
func TestWriteAt(t *testing.T) {
	base := t.TempDir()
	orig := filepath.Join(base, "pkg")
	require.NoError(t, os.Mkdir(orig, 0o755))
	elsewhere := filepath.Join(base, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(elsewhere, "target"), []byte("untouched"), 0o644))

	d, err := os.Open(orig)
	require.NoError(t, err)
	defer d.Close()
	moved := filepath.Join(base, "moved")
	require.NoError(t, os.Rename(orig, moved))
	require.NoError(t, os.Symlink(elsewhere, orig))

	require.NoError(t, WriteAt(d, "f", []byte("through the handle"), 0o640))
	b, err := os.ReadFile(filepath.Join(moved, "f"))
	require.NoError(t, err)
	assert.Equal(t, "through the handle", string(b))
	assert.NoFileExists(t, filepath.Join(elsewhere, "f"))

	require.NoError(t, os.Symlink(filepath.Join(elsewhere, "target"), filepath.Join(moved, "link")))
	require.NoError(t, WriteAt(d, "link", []byte("replaced"), 0o644))
	st, err := os.Lstat(filepath.Join(moved, "link"))
	require.NoError(t, err)
	assert.True(t, st.Mode().IsRegular(), "the symlink was replaced by a regular file")
	b, err = os.ReadFile(filepath.Join(elsewhere, "target"))
	require.NoError(t, err)
	assert.Equal(t, "untouched", string(b))

	for _, name := range []string{"", ".", "..", "a/b", "../f"} {
		assert.Error(t, WriteAt(d, name, []byte("x"), 0o644), name)
	}
	entries, err := os.ReadDir(moved)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no temporary file is left")
}
