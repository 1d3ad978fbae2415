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
