package perm

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The umask is process state: the cases run one after the other and restore it.
func TestModesFollowTheUmask(t *testing.T) {
	old := syscall.Umask(DefaultUmask)
	defer syscall.Umask(old)
	cases := []struct {
		umask           int
		file, exec, dir os.FileMode
	}{
		{DefaultUmask, 0o644, 0o755, 0o755},
		{SharedUmask, 0o664, 0o775, 0o775},
		{0o077, 0o600, 0o700, 0o700},
	}
	for _, tc := range cases {
		syscall.Umask(tc.umask)
		assert.Equal(t, os.FileMode(tc.umask), Umask(), "read back")
		assert.Equal(t, tc.file, File())
		assert.Equal(t, tc.exec, Exec())
		d := filepath.Join(t.TempDir(), "d")
		require.NoError(t, os.Mkdir(d, Dir))
		st, err := os.Stat(d)
		require.NoError(t, err)
		assert.Equal(t, tc.dir, st.Mode().Perm(), "mkdir applies the umask to Dir")
	}
}
