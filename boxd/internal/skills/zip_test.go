package skills

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zipEntry describes one archive member; declared sizes, when set, are written as they are
// (a lying header) with body as the raw stored bytes.
type zipEntry struct {
	name     string
	body     string
	mode     fs.FileMode // 0: regular 0644
	deflate  bool
	declared *[2]uint64 // compressed, uncompressed
}

func buildZip(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Store}
		if e.deflate {
			h.Method = zip.Deflate
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		if e.declared != nil {
			h.CompressedSize64, h.UncompressedSize64 = e.declared[0], e.declared[1]
			w, err := zw.CreateRaw(h)
			require.NoError(t, err)
			_, err = w.Write([]byte(e.body))
			require.NoError(t, err)
			continue
		}
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		_, err = w.Write([]byte(e.body))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func skillMD(name string) string {
	return "---\nname: " + name + "\ndescription: " + name + " skill\n---\n\nUse " + name + ".\n"
}

func sizes(c, u uint64) *[2]uint64 { return &[2]uint64{c, u} }

func TestExtractZipRejects(t *testing.T) {
	many := make([]zipEntry, MaxZipEntries+1)
	for i := range many {
		many[i] = zipEntry{name: fmt.Sprintf("f%d", i)}
	}
	fifteen := uint64(15 << 20)
	fiveBig := make([]zipEntry, 5)
	for i := range fiveBig {
		fiveBig[i] = zipEntry{name: fmt.Sprintf("big%d", i), body: "x", declared: sizes(fifteen/90, fifteen)}
	}
	for _, tc := range []struct {
		name    string
		entries []zipEntry
		err     string
	}{
		{"too many entries", many, "Archive contains too many entries (maximum 512)"},
		{"parent traversal", []zipEntry{{name: "../evil"}}, "Archive contains an unsafe path: ../evil"},
		{"nested traversal", []zipEntry{{name: "a/../../evil"}}, "Archive contains an unsafe path: a/../../evil"},
		{"backslash traversal", []zipEntry{{name: `..\evil`}}, `Archive contains an unsafe path: ..\evil`},
		{"absolute", []zipEntry{{name: "/etc/cron.d/x"}}, "Archive contains an unsafe path: /etc/cron.d/x"},
		{"drive", []zipEntry{{name: "C:/x"}}, "Archive contains an unsafe path: C:/x"},
		{"dot", []zipEntry{{name: "./"}}, "Archive contains an unsafe path: ./"},
		{"duplicate", []zipEntry{{name: "a.txt"}, {name: "./a.txt"}}, "Archive contains a duplicate path: ./a.txt"},
		{"symlink", []zipEntry{{name: "link", body: "/etc/passwd", mode: fs.ModeSymlink | 0o777}}, "Archive contains a symbolic link: link"},
		{"fifo", []zipEntry{{name: "pipe", mode: fs.ModeNamedPipe | 0o644}}, "Archive contains a non-regular entry: pipe"},
		{"device", []zipEntry{{name: "dev", mode: fs.ModeDevice | 0o644}}, "Archive contains a non-regular entry: dev"},
		{"entry too large", []zipEntry{{name: "big", body: "x", declared: sizes(1<<20, MaxZipEntryBytes+1)}}, "Archive entry exceeds the uncompressed size limit: big"},
		{"entry ratio", []zipEntry{{name: "bomb", body: strings.Repeat("0", 1<<20), deflate: true}}, "Archive entry exceeds the compression ratio limit: bomb"},
		{"zero compressed", []zipEntry{{name: "z", body: "", declared: sizes(0, 10)}}, "Archive entry exceeds the compression ratio limit: z"},
		{"total size", fiveBig, "Archive exceeds the total uncompressed size limit"},
		{"size lie", []zipEntry{{name: "lie", body: "0123456789", declared: sizes(10, 5)}}, "Archive entry size changed while extracting: lie"},
		{"not a zip", nil, "Uploaded file must be a valid .zip archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := []byte("this is not a zip")
			if tc.entries != nil {
				archive = buildZip(t, tc.entries...)
			}
			dest := filepath.Join(t.TempDir(), "x")
			err := ExtractZip(archive, dest, nil)
			assert.EqualError(t, err, tc.err)
			if tc.name != "size lie" {
				entries, _ := os.ReadDir(dest)
				assert.Empty(t, entries, "nothing is written before every check passed")
			}
		})
	}
}

func TestExtractZipRejectsDirectoryWithContent(t *testing.T) {
	// archive/zip refuses to write data under a directory name: write "qq9" and rename it.
	archive := bytes.ReplaceAll(buildZip(t, zipEntry{name: "qq9", body: "x"}), []byte("qq9"), []byte("qq/"))
	err := ExtractZip(archive, filepath.Join(t.TempDir(), "x"), nil)
	assert.EqualError(t, err, "Archive directory has unexpected content: qq/")
}

func TestExtractZipModes(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "x")
	require.NoError(t, ExtractZip(buildZip(t,
		zipEntry{name: "dir/"},
		zipEntry{name: "dir/run.sh", body: "#!/bin/sh\n", mode: 0o700},
		zipEntry{name: `win\path.txt`, body: "w", mode: 0o600},
	), dest, nil))
	st, err := os.Stat(filepath.Join(dest, "dir", "run.sh"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), st.Mode().Perm())
	st, err = os.Stat(filepath.Join(dest, "win", "path.txt"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), st.Mode().Perm())
}

func TestTargetStem(t *testing.T) {
	for in, want := range map[string]string{
		"My Skill (v2).zip": "My-Skill--v2",
		"demo.zip":          "demo",
		"a/b/pdf_tools.zip": "pdf_tools",
		"---.zip":           "uploaded-skill",
		"":                  "uploaded-skill",
		"技能.zip":            "技能",
		"archive.tar.gz":    "archive-tar",
	} {
		assert.Equal(t, want, TargetStem(in), in)
	}
}

func TestPreviewAndInstallZip(t *testing.T) {
	st := newStore(t)
	single := buildZip(t, zipEntry{name: "demo/"}, zipEntry{name: "demo/SKILL.md", body: skillMD("demo")}, zipEntry{name: "demo/run.py", body: "print(1)"})

	previews, err := st.PreviewZip(single, ZipRequest{Filename: "demo.zip", TargetSuffix: "upload"})
	require.NoError(t, err)
	require.Len(t, previews, 1)
	require.NotNil(t, previews[0].SourcePath)
	assert.Equal(t, "", *previews[0].SourcePath)
	assert.Equal(t, filepath.Join(st.Root, "demo-upload"), previews[0].PackageRoot)
	assert.NoDirExists(t, previews[0].PackageRoot, "a preview installs nothing")

	installed, err := st.InstallZip(single, ZipRequest{Filename: "demo.zip", TargetSuffix: "upload"})
	require.NoError(t, err)
	require.Len(t, installed, 1)
	assert.Equal(t, "demo", installed[0].Name)
	assert.Nil(t, installed[0].SourcePath)
	assert.FileExists(t, filepath.Join(st.Root, "demo-upload", "run.py"))
	_, err = st.InstallZip(single, ZipRequest{Filename: "demo.zip", TargetSuffix: "upload"})
	assert.EqualError(t, err, "Skill directory already exists: "+filepath.Join(st.Root, "demo-upload"))

	multi := buildZip(t,
		zipEntry{name: "bundle/a/SKILL.md", body: skillMD("alpha")},
		zipEntry{name: "bundle/b/SKILL.md", body: skillMD("beta")},
		zipEntry{name: "bundle/README", body: "r"})
	previews, err = st.PreviewZip(multi, ZipRequest{Filename: "bundle.zip"})
	require.NoError(t, err)
	require.Len(t, previews, 2)
	assert.Equal(t, "a", *previews[0].SourcePath)
	assert.Equal(t, filepath.Join(st.Root, "bundle-a"), previews[0].PackageRoot)

	for _, tc := range []struct {
		name string
		req  ZipRequest
		err  string
	}{
		{"no selection", ZipRequest{Filename: "bundle.zip"}, "Multiple skills found. Please choose one or more source_paths: a, b"},
		{"unknown", ZipRequest{Filename: "bundle.zip", SourcePaths: []string{"c"}}, `Invalid source_path "c". Available: a, b`},
		{"duplicate target", ZipRequest{Filename: "x.zip", SourcePaths: []string{"a", "/a/"}}, ""},
		{"subdir escape", ZipRequest{Filename: "bundle.zip", SourceSubdir: "../x"}, "source_subdir must stay within the uploaded archive"},
		{"subdir missing", ZipRequest{Filename: "bundle.zip", SourceSubdir: "zz"}, "source_subdir does not exist in the uploaded archive: zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := st.InstallZip(multi, tc.req)
			if tc.err == "" {
				require.NoError(t, err)
				assert.Len(t, out, 1, "duplicate source paths collapse")
				return
			}
			assert.EqualError(t, err, tc.err)
		})
	}

	out, err := st.InstallZip(multi, ZipRequest{Filename: "bundle.zip", SourcePaths: []string{"b"}, SourcePath: "a", TargetSuffix: "gh"})
	require.NoError(t, err)
	require.Len(t, out, 2)
	assert.Equal(t, "beta", out[0].Name)
	assert.Equal(t, filepath.Join(st.Root, "bundle-b-gh"), out[0].PackageRoot)

	sub, err := st.PreviewZip(multi, ZipRequest{Filename: "bundle.zip", SourceSubdir: `\b\`})
	require.NoError(t, err)
	require.Len(t, sub, 1)
	assert.Equal(t, "", *sub[0].SourcePath)

	_, err = st.PreviewZip(buildZip(t, zipEntry{name: "x/y/z/w/SKILL.md", body: "deep"}), ZipRequest{Filename: "deep.zip"})
	assert.ErrorContains(t, err, "No SKILL.md found in ")
	assert.ErrorContains(t, err, " or its subdirectories (max depth: 2)")

	_, err = st.PreviewZip(nil, ZipRequest{})
	assert.EqualError(t, err, "Uploaded file is empty")
	_, err = st.PreviewZip(make([]byte, MaxZipCompressedBytes+1), ZipRequest{})
	assert.EqualError(t, err, "Uploaded archive exceeds the compressed size limit (20971520 bytes)")

	staging, err := os.ReadDir(st.staging)
	require.NoError(t, err)
	assert.Empty(t, staging, "every staging directory is removed after use")
}

func TestInstallRollsBackOnFailure(t *testing.T) {
	st := newStore(t)
	// The second package has an invalid name in its front matter: preview refuses the
	// whole archive before anything is installed.
	bad := buildZip(t,
		zipEntry{name: "a/SKILL.md", body: skillMD("alpha")},
		zipEntry{name: "b/SKILL.md", body: "---\nname: not valid\n---\n"})
	_, err := st.InstallZip(bad, ZipRequest{Filename: "x.zip", SourcePaths: []string{"a", "b"}})
	assert.EqualError(t, err, "Skill name can only contain letters, numbers, hyphens and underscores")
	list, err := st.List()
	require.NoError(t, err)
	assert.Empty(t, list)
}
