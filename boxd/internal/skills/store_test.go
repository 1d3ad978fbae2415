package skills

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	root := realpath(filepath.Join(t.TempDir(), "skills"))
	st, err := Open(root, "ws-695136eeae1cb9b6af4a8226", Hooks{})
	require.NoError(t, err)
	return st
}

func set(v string) Field { return Field{Present: true, Value: v} }

func TestValidateName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"demo", "demo", ""},
		{"  pdf-tools_2 ", "pdf-tools_2", ""},
		{"技能", "技能", ""},
		{"", "", "Skill name is required"},
		{"   ", "", "Skill name is required"},
		{"a b", "", "Skill name can only contain letters, numbers, hyphens and underscores"},
		{"a.b", "", "Skill name can only contain letters, numbers, hyphens and underscores"},
		{"--", "", "Skill name can only contain letters, numbers, hyphens and underscores"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64), ""},
		{strings.Repeat("a", 65), "", "Skill name cannot exceed 64 characters"},
	} {
		got, err := ValidateName(tc.in)
		if tc.err != "" {
			assert.EqualError(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got)
	}
}

func TestFrontMatter(t *testing.T) {
	for _, tc := range []struct {
		name, content, instructions string
		meta                        map[string]any
		err                         bool
	}{
		{"none", "Just do it", "Just do it", map[string]any{}, false},
		{"simple", "---\nname: pdf\ndescription: d\n---\n\n\nBody\n", "Body\n", map[string]any{"name": "pdf", "description": "d"}, false},
		{"crlf", "---\r\nname: x\r\n---\r\nBody", "Body", map[string]any{"name": "x"}, false},
		{"unclosed", "---\nname: x\n", "---\nname: x\n", map[string]any{}, false},
		{"first line not fence", "---x\nname: x\n---\n", "---x\nname: x\n---\n", map[string]any{}, false},
		{"non-mapping", "---\n- a\n---\nB", "B", map[string]any{}, false},
		{"bad yaml", "---\nname: [\n---\nB", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta, instr, err := ParseFrontMatter(tc.content)
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.meta, meta)
			assert.Equal(t, tc.instructions, instr)
		})
	}
}

func TestBuildSkillMDRoundTrip(t *testing.T) {
	name, blank, long := "demo", " ", strings.Repeat("word ", 40)+": colon # hash 'quote' \"dq\"\nsecond line"
	for _, tc := range []struct {
		name string
		meta Metadata
	}{
		{"all", Metadata{Name: &name, DisplayName: &name, Description: &long}},
		{"blank dropped", Metadata{Name: &name, DisplayName: &blank}},
		{"nothing", Metadata{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := BuildSkillMD(tc.meta, "Do X\n")
			require.NoError(t, err)
			meta, instr, err := ParseFrontMatter(out)
			require.NoError(t, err)
			assert.Equal(t, "Do X\n", instr)
			for key, v := range map[string]*string{"name": tc.meta.Name, "display_name": tc.meta.DisplayName, "description": tc.meta.Description} {
				if v == nil || strings.TrimSpace(*v) == "" {
					assert.NotContains(t, meta, key)
				} else {
					assert.Equal(t, *v, meta[key], key)
				}
			}
		})
	}
	out, err := BuildSkillMD(Metadata{Name: &name, Description: &name}, "B")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(out, "---\nname: demo\ndescription: demo\n---\n\nB"), out)
}

func TestStoreLifecycle(t *testing.T) {
	st := newStore(t)
	list, err := st.List()
	require.NoError(t, err)
	assert.Empty(t, list)
	assert.DirExists(t, st.Root)

	sk, err := st.Create(Request{Name: set("demo"), Description: set("d"), Instructions: set("Do X")})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(st.Root, "demo"), sk.PackageRoot)
	assert.Equal(t, "demo", sk.DisplayName)
	assert.Equal(t, "SKILL.md", sk.EntryFile)
	assert.False(t, sk.PythonProject)
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$`, sk.UpdatedAt)
	raw, err := os.ReadFile(filepath.Join(sk.PackageRoot, "SKILL.md"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(raw), "---\nname: demo\n"), string(raw))

	_, err = st.Create(Request{Name: set("demo")})
	assert.EqualError(t, err, `Skill with name "demo" already exists`)
	_, err = st.Create(Request{Name: set("a b")})
	assert.EqualError(t, err, "Skill name can only contain letters, numbers, hyphens and underscores")
	_, err = st.Create(Request{Name: set("x"), PackageRoot: set("/tmp")})
	assert.EqualError(t, err, "package_root must stay within the Workspace skill root")

	got, err := st.Get("nope")
	require.NoError(t, err)
	assert.Nil(t, got)

	_, err = st.Update("demo", Request{Name: set("other")})
	assert.EqualError(t, err, "Renaming skills is not supported")
	_, err = st.Update("demo", Request{PackageRoot: set("/tmp")})
	assert.EqualError(t, err, "Updating package_root is not supported; recreate the skill to import a different package")
	_, err = st.Update("ghost", Request{})
	assert.EqualError(t, err, `Skill "ghost" not found`)
	up, err := st.Update("demo", Request{DisplayName: set("Demo Skill"), Instructions: set("Do Y")})
	require.NoError(t, err)
	assert.Equal(t, "Demo Skill", up.DisplayName)
	assert.Equal(t, "d", up.Description)
	assert.Equal(t, "Do Y", up.Instructions)
	up, err = st.Update("demo", Request{DisplayName: Field{Present: true, Null: true}})
	require.NoError(t, err)
	assert.Equal(t, "demo", up.DisplayName, "a null display_name drops it from the front matter")

	_, err = st.Scan("/tmp")
	assert.EqualError(t, err, "scan path must stay within the Workspace skill root")
	found, err := st.Scan(st.Root)
	require.NoError(t, err)
	assert.Equal(t, "demo", found.Name)

	// Adopt a package already under the tenant root, in place.
	nested := filepath.Join(st.Root, "vendor", "pdf-src")
	require.NoError(t, os.MkdirAll(nested, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(nested, "SKILL.md"), []byte("---\ndescription: from package\n---\nRead PDFs"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(nested, "requirements.txt"), []byte("pypdf\n"), 0o644))
	adopted, err := st.Create(Request{Name: set("pdf"), PackageRoot: set(nested), Description: set(" ")})
	require.NoError(t, err)
	assert.Equal(t, nested, adopted.PackageRoot)
	assert.Equal(t, "from package", adopted.Description, "blank falls back to the imported value")
	assert.Equal(t, "Read PDFs", adopted.Instructions)
	assert.True(t, adopted.PythonProject)

	_, err = st.Scan(st.Root)
	assert.ErrorContains(t, err, "Multiple skill directories found in "+st.Root+". Please choose a more specific path: ")

	require.NoError(t, st.Delete("pdf"))
	assert.NoDirExists(t, filepath.Join(st.Root, "vendor"), "the whole top-level directory goes")
	require.NoError(t, st.Delete("demo"))
	assert.NoDirExists(t, sk.PackageRoot)
	assert.EqualError(t, st.Delete("demo"), `Skill "demo" not found`)
}

func TestTenantsAreIsolated(t *testing.T) {
	root := realpath(filepath.Join(t.TempDir(), "skills"))
	a, err := Open(root, "ws-a", Hooks{})
	require.NoError(t, err)
	b, err := Open(root, "ws-b", Hooks{})
	require.NoError(t, err)
	_, err = a.Create(Request{Name: set("demo")})
	require.NoError(t, err)
	list, err := b.List()
	require.NoError(t, err)
	assert.Empty(t, list)
	_, err = b.Scan(filepath.Join(a.Root, "demo"))
	assert.EqualError(t, err, "scan path must stay within the Workspace skill root")
	for _, ns := range []string{"", " ", "a/b", `a\b`, ".", ".."} {
		_, err := Open(root, ns, Hooks{})
		assert.EqualError(t, err, "Invalid Box skill namespace", ns)
	}
}

func TestListSkipsBrokenAndSortsNewestFirst(t *testing.T) {
	st := newStore(t)
	for _, n := range []string{"old", "new"} {
		_, err := st.Create(Request{Name: set(n)})
		require.NoError(t, err)
	}
	require.NoError(t, os.Chtimes(filepath.Join(st.Root, "old", "SKILL.md"), mustTime(t, "2020-01-01T00:00:00Z"), mustTime(t, "2020-01-01T00:00:00Z")))
	bad := filepath.Join(st.Root, "bad")
	require.NoError(t, os.MkdirAll(bad, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "SKILL.md"), []byte{0xff, 0xfe}, 0o644))
	// A SKILL.md symlinked to a file outside the package is not an entry file.
	leak := filepath.Join(st.Root, "leak")
	require.NoError(t, os.MkdirAll(leak, 0o755))
	require.NoError(t, os.Symlink("/etc/hostname", filepath.Join(leak, "SKILL.md")))
	list, err := st.List()
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "new", list[0].Name)
	assert.Equal(t, "old", list[1].Name)
	assert.Equal(t, "2020-01-01T00:00:00+00:00", list[1].UpdatedAt)
}

// Item 9 of issue #10: instructions that would make SKILL.md unloadable are refused before
// anything is written, naming the field and the limit; a SKILL.md that is already too large
// (or otherwise unloadable) on disk can still be deleted by its directory name.
func TestSkillMDSizeLimit(t *testing.T) {
	st := newStore(t)
	_, err := st.Create(Request{Name: set("demo"), Instructions: set("small")})
	require.NoError(t, err)
	before, err := os.ReadFile(filepath.Join(st.Root, "demo", "SKILL.md"))
	require.NoError(t, err)
	huge := strings.Repeat("x", MaxTextBytes)
	header := "---\nname: demo\ndisplay_name: demo\n---\n\n" // what the update keeps
	want := fmt.Sprintf("Skill entry file SKILL.md exceeds the 1048576-byte limit: skill.instructions is 1048576 bytes and SKILL.md would be %d bytes; shorten skill.instructions", len(header)+MaxTextBytes)
	_, err = st.Update("demo", Request{Instructions: set(huge)})
	assert.EqualError(t, err, want)
	after, err := os.ReadFile(filepath.Join(st.Root, "demo", "SKILL.md"))
	require.NoError(t, err)
	assert.Equal(t, before, after, "nothing was written")
	_, err = st.Create(Request{Name: set("demo2"), Instructions: set(huge)})
	assert.ErrorContains(t, err, "skill.instructions")
	assert.NoDirExists(t, filepath.Join(st.Root, "demo2"))
	// Exactly at the limit is fine.
	_, err = st.Update("demo", Request{Instructions: set(huge[:MaxTextBytes-len(header)])})
	require.NoError(t, err)

	for _, tc := range []struct{ name, content string }{
		{"too-big", "---\nname: too-big\n---\n" + huge},
		{"not-utf8", "\xff\xfe"},
	} {
		pkg := filepath.Join(st.Root, tc.name)
		require.NoError(t, os.MkdirAll(filepath.Join(pkg, "sub"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(pkg, "SKILL.md"), []byte(tc.content), 0o644))
		got, err := st.Get(tc.name)
		require.NoError(t, err)
		require.Nil(t, got, "an unloadable package does not list")
		require.NoError(t, st.Delete(tc.name))
		assert.NoDirExists(t, pkg)
	}
	require.NoError(t, os.MkdirAll(filepath.Join(st.Root, "plain-dir"), 0o755))
	assert.EqualError(t, st.Delete("plain-dir"), `Skill "plain-dir" not found`, "a directory without an entry file is no skill")
	assert.DirExists(t, filepath.Join(st.Root, "plain-dir"))
	assert.EqualError(t, st.Delete("../demo"), `Skill "../demo" not found`)
}

// Item 6 of issue #10: a FIFO where a file is expected is refused at once, never opened for
// reading (which blocks until a writer comes).
func TestFIFOsAreNeverOpened(t *testing.T) {
	st := newStore(t)
	sk, err := st.Create(Request{Name: set("demo")})
	require.NoError(t, err)
	require.NoError(t, unix.Mkfifo(filepath.Join(sk.PackageRoot, "pipe"), 0o644))
	_, err = st.ReadFile("demo", "pipe")
	assert.EqualError(t, err, "Skill file not found: pipe")
	l, err := st.ListFiles("demo", ".", true, 10)
	require.NoError(t, err)
	assert.Len(t, l.Entries, 2)

	fifoPkg := filepath.Join(st.Root, "fifo-pkg")
	require.NoError(t, os.MkdirAll(fifoPkg, 0o755))
	require.NoError(t, unix.Mkfifo(filepath.Join(fifoPkg, "SKILL.md"), 0o644))
	list, err := st.List()
	require.NoError(t, err)
	require.Len(t, list, 1, "a FIFO is not an entry file")
	// The package written into through a FIFO-free path still works.
	_, err = st.WriteFile("demo", "pipe", "now a file")
	require.NoError(t, err)
	got, err := st.ReadFile("demo", "pipe")
	require.NoError(t, err)
	assert.Equal(t, "now a file", got.Content)
}
