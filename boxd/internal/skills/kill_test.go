package skills

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The interrupted-install test re-executes this test binary as a child that installs a zip
// into a store and, at a chosen point, tells the parent (one line on stdout) and blocks on
// its stdin; the parent then kills it with SIGKILL. These variables configure the child.
const (
	childEnv    = "BOXD_SKILLS_INSTALL_CHILD" // store root
	childZipEnv = "BOXD_SKILLS_INSTALL_ZIP"
	childAtEnv  = "BOXD_SKILLS_INSTALL_STOP_AT" // "extract:<n>" or "package:<n>"
	childNS     = "ws-killtest"
)

func TestMain(m *testing.M) {
	if root := os.Getenv(childEnv); root != "" {
		os.Exit(runInstallChild(root))
	}
	os.Exit(m.Run())
}

func runInstallChild(root string) int {
	var kind string
	var n int
	if _, err := fmt.Sscanf(strings.Replace(os.Getenv(childAtEnv), ":", " ", 1), "%s %d", &kind, &n); err != nil {
		fmt.Fprintln(os.Stderr, "bad stop point:", err)
		return 2
	}
	count := 0
	stop := func(string) {
		count++
		if count == n {
			fmt.Println("ready") // the parent kills us now
			_, _ = io.Copy(io.Discard, os.Stdin)
		}
	}
	hooks := Hooks{}
	if kind == "extract" {
		hooks.AfterExtractFile = stop
	} else {
		hooks.AfterInstallPackage = stop
	}
	st, err := Open(root, childNS, hooks)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	archive, err := os.ReadFile(os.Getenv(childZipEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := st.InstallZip(archive, ZipRequest{Filename: "bundle.zip", SourcePaths: []string{"a", "b"}, TargetSuffix: "upload"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("finished")
	return 0
}

// treeDigest hashes every path, mode and content under dir.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	var paths []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		paths = append(paths, p)
		return nil
	}))
	sort.Strings(paths)
	for _, p := range paths {
		st, err := os.Lstat(p)
		require.NoError(t, err)
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s %v\n", rel, st.Mode())
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestInstallKilledHalfWay(t *testing.T) {
	// A bundle of two packages with enough files that "half-way" is well defined.
	var entries []zipEntry
	for _, pkg := range []string{"a", "b"} {
		entries = append(entries, zipEntry{name: "bundle/" + pkg + "/SKILL.md", body: skillMD("pkg-" + pkg)})
		for i := 0; i < 20; i++ {
			entries = append(entries, zipEntry{name: fmt.Sprintf("bundle/%s/data/%02d.txt", pkg, i), body: strings.Repeat(pkg, 4096)})
		}
	}
	bundle := buildZip(t, entries...)
	previous := buildZip(t, zipEntry{name: "demo/SKILL.md", body: skillMD("demo")}, zipEntry{name: "demo/v1.txt", body: "version 1"})

	for _, tc := range []struct {
		name, stopAt string
		installed    []string // skills listed after the kill, besides the previous one
	}{
		{"during extraction", "extract:12", nil},
		{"between two packages", "package:1", []string{"pkg-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := realpath(filepath.Join(t.TempDir(), "skills"))
			st, err := Open(root, childNS, Hooks{})
			require.NoError(t, err)
			_, err = st.InstallZip(previous, ZipRequest{Filename: "demo.zip", TargetSuffix: "upload"})
			require.NoError(t, err)
			before := treeDigest(t, filepath.Join(st.Root, "demo-upload"))
			zipPath := filepath.Join(t.TempDir(), "bundle.zip")
			require.NoError(t, os.WriteFile(zipPath, bundle, 0o644))

			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), childEnv+"="+root, childZipEnv+"="+zipPath, childAtEnv+"="+tc.stopAt)
			stdin, err := child.StdinPipe()
			require.NoError(t, err)
			defer stdin.Close()
			stdout, err := child.StdoutPipe()
			require.NoError(t, err)
			child.Stderr = os.Stderr
			require.NoError(t, child.Start())
			line, err := bufio.NewReader(stdout).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "ready\n", line, "the child reached the stop point")
			require.NoError(t, child.Process.Signal(syscall.SIGKILL))
			err = child.Wait()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr)
			status, ok := exitErr.Sys().(syscall.WaitStatus)
			require.True(t, ok)
			assert.Equal(t, syscall.SIGKILL, status.Signal(), "the install was killed, not finished")

			assert.Equal(t, before, treeDigest(t, filepath.Join(st.Root, "demo-upload")), "the previous skill is intact")
			list, err := st.List()
			require.NoError(t, err)
			var names []string
			for _, sk := range list {
				names = append(names, sk.Name)
			}
			assert.ElementsMatch(t, append([]string{"demo"}, tc.installed...), names)
			// Whatever is installed is complete: all 21 files of each package, or nothing.
			for _, pkg := range []string{"a", "b"} {
				target := filepath.Join(st.Root, "bundle-"+pkg+"-upload")
				if _, err := os.Stat(target); err != nil {
					continue
				}
				files, err := filepath.Glob(filepath.Join(target, "data", "*.txt"))
				require.NoError(t, err)
				assert.Len(t, files, 20, target)
			}

			// The interrupted run left its staging directory behind; it is swept once it is
			// old enough, and a new install is not disturbed by it.
			leftovers, err := os.ReadDir(st.staging)
			require.NoError(t, err)
			require.NotEmpty(t, leftovers)
			old := time.Now().Add(-2 * stagingMaxAge)
			for _, e := range leftovers {
				require.NoError(t, os.Chtimes(filepath.Join(st.staging, e.Name()), old, old))
			}
			_, err = st.InstallZip(bundle, ZipRequest{Filename: "bundle.zip", SourcePaths: []string{"b"}, TargetSuffix: "upload"})
			require.NoError(t, err)
			after, err := os.ReadDir(st.staging)
			require.NoError(t, err)
			assert.Empty(t, after, "old staging leftovers are swept")
		})
	}
}
