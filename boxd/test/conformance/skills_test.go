//go:build integration

package conformance

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// zipOf builds an archive of name → content.
func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// upload sends data with __file_chunk as LangBot does (16 KiB per chunk) and returns the key.
func (c *conn) upload(t *testing.T, key string, data []byte) string {
	t.Helper()
	const chunk = 16 << 10
	n := (len(data) + chunk - 1) / chunk
	for i := 0; i < n; i++ {
		part := data[i*chunk : min(len(data), (i+1)*chunk)]
		c.ok("__file_chunk", map[string]any{"file_key": key, "chunk_base64": base64.StdEncoding.EncodeToString(part),
			"chunk_index": i, "chunk_amount": n, "file_length": len(data), "chunk_size": chunk}, nil)
	}
	return key
}

func (c *conn) fails(action string, data any, context map[string]any) string {
	c.t.Helper()
	r := c.call(action, data, context)
	require.NotEqual(c.t, 0, r.Code, "%s unexpectedly succeeded: %v", action, r.Data)
	return r.Message
}

func TestSkillStoreOverTheWire(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	ns := tenancy.Namespace(instance, workspace)
	tenantRoot := filepath.Join(root, "skills", "tenants", ns)

	// 71: a fresh tenant lists nothing and gets its root created.
	assert.Equal(t, map[string]any{"skills": []any{}}, c.ok("box_list_skills", map[string]any{}, ctx1))
	assert.DirExists(t, tenantRoot)

	// 72: create.
	sk := c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": "demo", "description": "d", "instructions": "Do X"}}, ctx1)["skill"].(map[string]any)
	assert.Equal(t, filepath.Join(tenantRoot, "demo"), sk["package_root"])
	assert.Equal(t, "demo", sk["display_name"])
	assert.Equal(t, "SKILL.md", sk["entry_file"])
	assert.Equal(t, false, sk["python_project"])
	raw, err := os.ReadFile(filepath.Join(tenantRoot, "demo", "SKILL.md"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(raw), "---\nname: demo\n"))

	// Error texts LangBot shows (73-77, 84) and the per-action wrapping of §3.6.
	for _, tc := range []struct {
		action string
		data   map[string]any
		want   string
	}{
		{"box_create_skill", map[string]any{"skill": map[string]any{"name": "demo"}}, `BoxValidationError: Skill with name "demo" already exists`},
		{"box_create_skill", map[string]any{"skill": map[string]any{"name": "a b"}}, "BoxValidationError: Skill name can only contain letters, numbers, hyphens and underscores"},
		{"box_create_skill", map[string]any{}, "BoxValidationError: 'skill'"},
		{"box_get_skill", map[string]any{}, "KeyError: 'name'"},
		{"box_update_skill", map[string]any{"name": "demo", "skill": map[string]any{"name": "other"}}, "BoxValidationError: Renaming skills is not supported"},
		{"box_update_skill", map[string]any{"name": "ghost", "skill": map[string]any{}}, `BoxValidationError: Skill "ghost" not found`},
		{"box_write_skill_file", map[string]any{"name": "demo", "path": "../x", "content": "x"}, "BoxValidationError: path must stay within the skill package root"},
		{"box_write_skill_file", map[string]any{"name": "demo", "path": "/etc/passwd", "content": "x"}, "BoxValidationError: path must be relative to the skill package root"},
		{"box_read_skill_file", map[string]any{"name": "demo"}, "BoxValidationError: 'path'"},
		{"box_read_skill_file", map[string]any{"name": "demo", "path": "nope.txt"}, "BoxValidationError: Skill file not found: nope.txt"},
		{"box_list_skill_files", map[string]any{"name": "demo", "max_entries": "abc"}, "BoxValidationError: invalid literal for int() with base 10: 'abc'"},
		{"box_list_skill_files", map[string]any{"name": "demo", "max_entries": 0}, "BoxValidationError: max_entries must be a positive integer"},
		{"box_scan_skill_directory", map[string]any{"path": "/tmp"}, "BoxValidationError: scan path must stay within the Workspace skill root"},
		{"box_delete_skill", map[string]any{"name": "ghost"}, `BoxValidationError: Skill "ghost" not found`},
		{"box_preview_skill_zip", map[string]any{"file_key": "missing.zip"}, "BoxValidationError: File transfer missing.zip not found"},
		{"box_preview_skill_zip", map[string]any{"file_key": "../x"}, "BoxValidationError: Invalid file transfer key"},
	} {
		t.Run(tc.action+" "+tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, c.fails(tc.action, tc.data, ctx1))
		})
	}
	assert.Equal(t, map[string]any{"skill": nil}, c.ok("box_get_skill", map[string]any{"name": "nope"}, ctx1))
	assert.Equal(t, "PermissionError: Box tenant action requires a trusted Workspace context", c.fails("box_list_skills", map[string]any{}, nil))

	// 76, 77: files.
	w := c.ok("box_write_skill_file", map[string]any{"name": "demo", "path": "scripts/run.sh", "content": "echo héllo"}, ctx1)
	assert.Equal(t, map[string]any{"skill": map[string]any{"name": "demo"}, "path": "scripts/run.sh", "bytes_written": float64(len("echo héllo"))}, w)
	require.NoError(t, os.WriteFile(filepath.Join(tenantRoot, "demo", "latin1.txt"), []byte("caf\xe9"), 0o644))
	assert.Equal(t, "BoxValidationError: Skill file latin1.txt is not valid UTF-8 text",
		c.fails("box_read_skill_file", map[string]any{"name": "demo", "path": "latin1.txt"}, ctx1))
	read := c.ok("box_read_skill_file", map[string]any{"name": "demo", "path": "./scripts/run.sh"}, ctx1)
	assert.Equal(t, map[string]any{"skill": map[string]any{"name": "demo"}, "path": "scripts/run.sh", "content": "echo héllo"}, read)

	// 78: listing hides dot-files, sorts, truncates.
	require.NoError(t, os.WriteFile(filepath.Join(tenantRoot, "demo", ".hidden"), []byte("h"), 0o644))
	l := c.ok("box_list_skill_files", map[string]any{"name": "demo", "max_entries": 2}, ctx1)
	assert.Equal(t, ".", l["base_path"])
	assert.Equal(t, true, l["truncated"])
	assert.Equal(t, []any{
		map[string]any{"path": "SKILL.md", "name": "SKILL.md", "is_dir": false, "size": float64(len(raw))},
		map[string]any{"path": "latin1.txt", "name": "latin1.txt", "is_dir": false, "size": float64(4)},
	}, l["entries"])
	l = c.ok("box_list_skill_files", map[string]any{"name": "demo", "include_hidden": 1, "max_entries": "10"}, ctx1)
	assert.Len(t, l["entries"], 4)
	assert.Equal(t, map[string]any{"path": "scripts", "name": "scripts", "is_dir": true, "size": nil}, l["entries"].([]any)[3])

	// 79, 80: zip upload, preview, install.
	archive := zipOf(t, map[string]string{"demo2/SKILL.md": "---\nname: zipped\ndescription: from a zip\n---\nUse it.\n", "demo2/tool.sh": "echo v1"})
	key := c.upload(t, "0123456789abcdef-aaaa.zip", archive)
	prev := c.ok("box_preview_skill_zip", map[string]any{"file_key": key, "filename": "demo2.zip"}, ctx1)["skills"].([]any)
	require.Len(t, prev, 1)
	p := prev[0].(map[string]any)
	assert.Equal(t, "", p["source_path"])
	assert.Equal(t, filepath.Join(tenantRoot, "demo2-upload"), p["package_root"])
	assert.NoDirExists(t, filepath.Join(tenantRoot, "demo2-upload"))
	assert.Contains(t, c.fails("box_install_skill_zip", map[string]any{"file_key": key}, ctx1), "not found", "the transfer file was consumed by the preview")

	key = c.upload(t, "0123456789abcdef-bbbb.zip", archive)
	inst := c.ok("box_install_skill_zip", map[string]any{"file_key": key, "filename": "demo2.zip", "source_paths": nil}, ctx1)["skills"].([]any)
	require.Len(t, inst, 1)
	assert.Equal(t, "zipped", inst[0].(map[string]any)["name"])
	assert.NotContains(t, inst[0], "source_path")
	key = c.upload(t, "0123456789abcdef-cccc.zip", archive)
	assert.Equal(t, "BoxValidationError: Skill directory already exists: "+filepath.Join(tenantRoot, "demo2-upload"),
		c.fails("box_install_skill_zip", map[string]any{"file_key": key, "filename": "demo2.zip"}, ctx1))

	evil := zipOf(t, map[string]string{"../evil.sh": "x"})
	key = c.upload(t, "0123456789abcdef-dddd.zip", evil)
	assert.Equal(t, "BoxValidationError: Archive contains an unsafe path: ../evil.sh",
		c.fails("box_install_skill_zip", map[string]any{"file_key": key}, ctx1))

	// 83: another workspace sees nothing; 62: a later generation still sees the skills.
	other := map[string]any{"instance_uuid": instance, "workspace_uuid": "workspace-b", "placement_generation": 1}
	assert.Equal(t, map[string]any{"skills": []any{}}, c.ok("box_list_skills", map[string]any{}, other))
	gen2 := map[string]any{"instance_uuid": instance, "workspace_uuid": workspace, "placement_generation": 2}
	assert.Len(t, c.ok("box_list_skills", map[string]any{}, gen2)["skills"], 2)

	// Scan inside the tenant root.
	scanned := c.ok("box_scan_skill_directory", map[string]any{"path": filepath.Join(tenantRoot, "demo2-upload")}, gen2)
	assert.Equal(t, "zipped", scanned["name"])

	// 85: delete.
	assert.Equal(t, map[string]any{"deleted": "demo"}, c.ok("box_delete_skill", map[string]any{"name": "demo"}, gen2))
	assert.NoDirExists(t, filepath.Join(tenantRoot, "demo"))
}

// A skill installed from a zip is mounted read-only at /workspace/.skills/<name> as LangBot
// asks (extra_mounts), and an edit through box_write_skill_file is visible inside the
// running session at once.
func TestSkillMountedIntoSession(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	archive := zipOf(t, map[string]string{"SKILL.md": "---\nname: greeter\n---\nRun tool.sh\n", "tool.sh": "echo version-1\n"})
	key := c.upload(t, "fedcba9876543210-greeter.zip", archive)
	inst := c.ok("box_install_skill_zip", map[string]any{"file_key": key, "filename": "greeter.zip", "target_suffix": ""}, ctx1)["skills"].([]any)
	require.Len(t, inst, 1)
	pkg := inst[0].(map[string]any)["package_root"].(string)
	assert.Equal(t, "greeter", filepath.Base(pkg), `target_suffix "" installs under the bare stem`)

	ws := filepath.Join(root, "default", "tenants", tenancy.Namespace(instance, workspace))
	require.NoError(t, os.MkdirAll(ws, 0o755))
	mounts := []any{map[string]any{"host_path": pkg, "mount_path": "/workspace/.skills/greeter", "mode": "ro"}}
	exec := func(cmd string) map[string]any {
		return c.ok("box_exec", spec("skills", map[string]any{"cmd": cmd, "host_path": ws, "host_path_mode": "rw",
			"extra_mounts": mounts, "skill_name": "greeter", "workdir": "/workspace/.skills/greeter"}), ctx1)
	}
	out := exec("sh tool.sh && pwd")
	assert.Equal(t, float64(0), out["exit_code"], out)
	assert.Equal(t, "version-1\n/workspace/.skills/greeter", out["stdout"])
	out = exec("echo tamper > /workspace/.skills/greeter/tool.sh")
	assert.NotEqual(t, float64(0), out["exit_code"], "the skill mount is read-only")
	assert.Contains(t, out["stderr"], "Read-only file system")

	c.ok("box_write_skill_file", map[string]any{"name": "greeter", "path": "tool.sh", "content": "echo version-2\n"}, ctx1)
	out = exec("sh tool.sh")
	assert.Equal(t, "version-2", out["stdout"], "the edit is visible in the running session")
	sessions := c.ok("box_get_sessions", map[string]any{}, ctx1)["sessions"].([]any)
	assert.Len(t, sessions, 1, "the same session served every exec")
}
