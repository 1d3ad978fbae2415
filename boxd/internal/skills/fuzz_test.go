package skills

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (committed); `go test` runs them as unit
// tests. To fuzz longer: see boxd/README.md ("Fuzzing").

// FuzzExtractZip: whatever the archive, extraction either fails before or while writing,
// or produces only directories and regular files inside the destination, within the size
// limits; it never panics and never writes outside.
func FuzzExtractZip(f *testing.F) {
	f.Add(buildZip(f, zipEntry{name: "demo/SKILL.md", body: skillMD("demo")}))
	f.Add(buildZip(f, zipEntry{name: "../evil", body: "x"}))
	f.Add(buildZip(f, zipEntry{name: "link", body: "/etc", mode: fs.ModeSymlink | 0o777}))
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Fuzz(func(t *testing.T, archive []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "x")
		sentinel := filepath.Join(parent, "sentinel")
		require.NoError(t, os.WriteFile(sentinel, []byte("s"), 0o644))
		_ = ExtractZip(archive, dest, nil)
		var total int64
		_ = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == parent || p == sentinel {
				return nil
			}
			assert.True(t, mounts.Within(p, dest), "written outside the destination: %s", p)
			info, err := os.Lstat(p)
			require.NoError(t, err)
			assert.True(t, info.IsDir() || info.Mode().IsRegular(), "not a directory or regular file: %s", p)
			if info.Mode().IsRegular() {
				assert.LessOrEqual(t, info.Size(), int64(MaxZipEntryBytes))
				total += info.Size()
			}
			return nil
		})
		assert.LessOrEqual(t, total, int64(MaxZipTotalBytes))
		b, err := os.ReadFile(sentinel)
		require.NoError(t, err)
		assert.Equal(t, "s", string(b), "a file next to the destination was modified")
	})
}

// FuzzResolveInPackage: a requested path either is refused or resolves inside the package,
// however it is spelled and whatever symlinks the package holds.
func FuzzResolveInPackage(f *testing.F) {
	for _, seed := range []string{".", "", "SKILL.md", "../x", "/etc/passwd", "a/../../b", "out/x", "in/x", "..foo", "a//b/./c", " ", "\x00"} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	root := f.TempDir()
	pkg := filepath.Join(root, "pkg")
	require.NoError(f, os.MkdirAll(filepath.Join(pkg, "d"), 0o755))
	require.NoError(f, os.Symlink(root, filepath.Join(pkg, "out")))
	require.NoError(f, os.Symlink("d", filepath.Join(pkg, "in")))
	require.NoError(f, os.Symlink("/", filepath.Join(pkg, "d", "up")))
	f.Fuzz(func(t *testing.T, requested string, wantDir bool) {
		target, rel, err := ResolveInPackage(pkg, requested, wantDir)
		if err != nil {
			return
		}
		assert.True(t, mounts.Within(target, pkg), "%q resolved outside: %s", requested, target)
		assert.True(t, mounts.Within(mounts.Resolve(target), pkg), "%q resolves through a link outside", requested)
		assert.NotEqual(t, "..", rel)
	})
}
