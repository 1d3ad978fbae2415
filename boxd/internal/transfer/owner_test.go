package transfer

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A transfer belongs to the connection that uploaded it: another connection's store, on the
// same storage directory, can neither take it nor append to it.
func TestTransferIsOwnedByItsConnection(t *testing.T) {
	dir := t.TempDir()
	a, err := NewStore(dir, 1<<20)
	require.NoError(t, err)
	b, err := NewStore(dir, 1<<20)
	require.NoError(t, err)
	require.NoError(t, a.Chunk(chunkJSON("shared-key.zip", "from-a", 0, 2)))

	_, err = b.Take("shared-key.zip")
	assert.EqualError(t, err, "ValueError: File transfer shared-key.zip not found")
	// A later chunk appends, as in the reference, but to B's own transfer of that key.
	require.NoError(t, b.Chunk(chunkJSON("shared-key.zip", "from-b", 1, 2)))

	require.NoError(t, a.Chunk(chunkJSON("shared-key.zip", "-done", 1, 2)))
	got, err := a.Take("shared-key.zip")
	require.NoError(t, err)
	assert.Equal(t, "from-a-done", string(got))
	got, err = b.Take("shared-key.zip")
	require.NoError(t, err)
	assert.Equal(t, "from-b", string(got))
	a.Close()
	b.Close()
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, left, "closed stores leave nothing in the storage directory")
}

// A symlink planted in the storage directory under a key's name is never followed.
func TestPlantedSymlinkIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(victim, []byte("precious"), 0o644))
	require.NoError(t, os.Symlink(victim, filepath.Join(dir, "planted.zip")))
	s, err := NewStore(dir, 1<<20)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Chunk(chunkJSON("planted.zip", "overwritten", 0, 1)))
	got, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "precious", string(got))
	data, err := s.Take("planted.zip")
	require.NoError(t, err)
	assert.Equal(t, "overwritten", string(data))
}

// The storage directory is created 0700; one that exists is used only when boxd owns it, it
// is a real directory and nobody else can write to it. The test runs as root, like boxd.
func TestStorageDirectoryMustBeBoxds(t *testing.T) {
	require.Equal(t, 0, os.Geteuid(), "this test plants directories owned by another user: run it as root")
	base := t.TempDir()
	fresh := filepath.Join(base, "new", "lbp-rpc")
	s, err := NewStore(fresh, 1)
	require.NoError(t, err)
	s.Close()
	st, err := os.Stat(fresh)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())

	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		require.NoError(t, os.Mkdir(p, mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	nobody := mk("nobody", 0o700)
	require.NoError(t, os.Chown(nobody, 65534, 65534))
	target := mk("target", 0o700)
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(target, link))
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	cases := []struct {
		dir, want string
	}{
		{nobody, "file transfer directory " + nobody + " is owned by uid 65534, not by boxd (uid 0)"},
		{link, "file transfer directory " + link + " is a symbolic link"},
		{mk("group", 0o770), "file transfer directory " + filepath.Join(base, "group") + " is writable by group or others (mode 0770)"},
		{mk("world", 0o1777), "file transfer directory " + filepath.Join(base, "world") + " is writable by group or others (mode 0777)"},
		{file, "file transfer directory " + file + " is not a directory"},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.dir), func(t *testing.T) {
			_, err := NewStore(tc.dir, 1)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "set LANGBOT_PLUGIN_FILE_STORAGE_DIR (or TMPDIR) to a directory only boxd's user can write, or remove it")
		})
	}
	var sst syscall.Stat_t
	require.NoError(t, syscall.Stat(nobody, &sst))
	assert.Equal(t, uint32(65534), sst.Uid, "a refused directory is left as it was")
}
