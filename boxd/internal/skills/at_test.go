package skills

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// handleModes are the two ways a dir resolves paths: openat2 and the component walk used
// when openat2 is missing (ENOSYS). Every helper must behave the same in both.
var handleModes = []struct {
	name string
	walk bool
}{{"openat2", false}, {"walk", true}}

// hostileTree builds pkg/{d/f, link-out -> outside, link-in -> d, d/up -> /, fifo} next to
// outside/secret and returns pkg and outside.
func hostileTree(t *testing.T) (string, string) {
	t.Helper()
	base := t.TempDir()
	pkg, outside := filepath.Join(base, "pkg"), filepath.Join(base, "outside")
	require.NoError(t, os.MkdirAll(filepath.Join(pkg, "d"), 0o755))
	require.NoError(t, os.MkdirAll(outside, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "d", "f"), []byte("inside"), 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(pkg, "link-out")))
	require.NoError(t, os.Symlink("d", filepath.Join(pkg, "link-in")))
	require.NoError(t, os.Symlink("/", filepath.Join(pkg, "d", "up")))
	require.NoError(t, unix.Mkfifo(filepath.Join(pkg, "fifo"), 0o644))
	return pkg, outside
}

func openTest(t *testing.T, p string, walk bool) *dir {
	t.Helper()
	d, err := openDirPath(p)
	require.NoError(t, err)
	d.walk = walk
	t.Cleanup(d.close)
	return d
}

func TestDirSubNeverFollowsLinks(t *testing.T) {
	for _, m := range handleModes {
		t.Run(m.name, func(t *testing.T) {
			pkg, _ := hostileTree(t)
			d := openTest(t, pkg, m.walk)
			for _, tc := range []struct {
				rel     string
				wantErr error
			}{
				{".", nil}, {"d", nil}, {"d/.", nil},
				{"link-out", nil}, {"link-in", nil}, {"link-out/x", nil}, {"d/up", nil}, {"d/up/etc", nil},
				{"..", unix.EXDEV}, {"d/f", unix.ENOTDIR}, {"missing", unix.ENOENT},
			} {
				sub, err := d.sub(tc.rel)
				if tc.rel == "." || tc.rel == "d" || tc.rel == "d/." {
					require.NoError(t, err, tc.rel)
					sub.close()
					continue
				}
				require.Error(t, err, tc.rel)
				if tc.wantErr != nil {
					assert.ErrorIs(t, err, tc.wantErr, tc.rel)
				} else {
					assert.True(t, d.throughLink(tc.rel, err), "%s: %v is reported as a link on the way", tc.rel, err)
				}
			}
		})
	}
}

// A handle keeps naming the directory it opened: the directory renamed away and replaced by
// a symlink (what a sandbox does with renameat2) changes nothing for it.
func TestDirHandleSurvivesSwap(t *testing.T) {
	for _, m := range handleModes {
		t.Run(m.name, func(t *testing.T) {
			pkg, outside := hostileTree(t)
			d := openTest(t, filepath.Join(pkg, "d"), m.walk)
			moved := filepath.Join(pkg, "moved")
			require.NoError(t, os.Rename(filepath.Join(pkg, "d"), moved))
			require.NoError(t, os.Symlink(outside, filepath.Join(pkg, "d")))
			data, _, err := d.readRegular("f", 100)
			require.NoError(t, err)
			assert.Equal(t, "inside", string(data))
			_, _, err = d.readRegular("secret", 100)
			assert.ErrorIs(t, err, os.ErrNotExist)
			made, err := d.mkdirAll("new/deeper")
			require.NoError(t, err)
			made.close()
			assert.DirExists(t, filepath.Join(moved, "new", "deeper"))
			assert.NoDirExists(t, filepath.Join(outside, "new"))
		})
	}
}

func TestDirMkdirAllRefusesLinks(t *testing.T) {
	for _, m := range handleModes {
		t.Run(m.name, func(t *testing.T) {
			pkg, outside := hostileTree(t)
			d := openTest(t, pkg, m.walk)
			for _, rel := range []string{"link-out/x", "link-in/x", "d/up/tmp/x", "../x"} {
				_, err := d.mkdirAll(rel)
				assert.Error(t, err, rel)
			}
			entries, err := os.ReadDir(outside)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "nothing was created outside")
			assert.NoDirExists(t, filepath.Join(pkg, "d", "x"))
		})
	}
}

func TestDirReadRegular(t *testing.T) {
	for _, m := range handleModes {
		t.Run(m.name, func(t *testing.T) {
			pkg, _ := hostileTree(t)
			d := openTest(t, pkg, m.walk)
			sub, err := d.sub("d")
			require.NoError(t, err)
			defer sub.close()
			data, st, err := sub.readRegular("f", 6)
			require.NoError(t, err)
			assert.Equal(t, "inside", string(data))
			assert.EqualValues(t, 6, st.Size)
			_, _, err = sub.readRegular("f", 5)
			assert.ErrorIs(t, err, errTooLarge)
			// A FIFO is refused without being opened for reading (which would block).
			_, _, err = d.readRegular("fifo", 100)
			assert.ErrorIs(t, err, errNotRegular)
			_, _, err = d.readRegular("d", 100)
			assert.ErrorIs(t, err, errNotRegular)
			_, _, err = d.readRegular("link-in", 100)
			assert.ErrorIs(t, err, unix.ELOOP)
			_, _, err = d.readRegular("missing", 100)
			assert.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// statBeneath follows a link only while it stays inside the handle.
func TestDirStatBeneath(t *testing.T) {
	pkg, _ := hostileTree(t)
	d := openTest(t, pkg, false)
	st, err := d.statBeneath("link-in")
	require.NoError(t, err)
	assert.True(t, isDir(st))
	for _, rel := range []string{"link-out", "d/up"} {
		_, err := d.statBeneath(rel)
		assert.ErrorIs(t, err, unix.EXDEV, rel)
	}
	_, err = openTest(t, pkg, true).statBeneath("link-in")
	assert.Error(t, err, "without openat2 links are not followed")
}

// copyTree copies directories and regular files (with their permission bits), never a link,
// FIFO or what a link points to.
func TestCopyTree(t *testing.T) {
	for _, m := range handleModes {
		t.Run(m.name, func(t *testing.T) {
			pkg, _ := hostileTree(t)
			src := openTest(t, pkg, m.walk)
			parentPath := t.TempDir()
			parent := openTest(t, parentPath, m.walk)
			require.NoError(t, copyTree(src, parent, "copy"))
			var got []string
			require.NoError(t, filepath.Walk(filepath.Join(parentPath, "copy"), func(p string, info os.FileInfo, err error) error {
				require.NoError(t, err)
				rel, _ := filepath.Rel(parentPath, p)
				got = append(got, rel+" "+info.Mode().String())
				return nil
			}))
			assert.Equal(t, []string{"copy drwxr-xr-x", "copy/d drwxr-xr-x", "copy/d/f -rw-r-----"}, got)
			require.NoError(t, copyTree(src, src, "self"), "a copy into the source itself skips its own temporary directory")
			assert.FileExists(t, filepath.Join(pkg, "self", "d", "f"))
			assert.Error(t, copyTree(src, parent, "copy"), "the target exists and is not empty")
			leftovers, err := filepath.Glob(filepath.Join(parentPath, ".copy.copy-*"))
			require.NoError(t, err)
			assert.Empty(t, leftovers, "a failed copy removes its temporary directory")
		})
	}
}
