package skills

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/atomicfile"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// ResolveInPackage applies the path rules of §10.4 to a path requested inside a package
// root (already resolved). It returns the resolved target and the normalised relative path.
// wantDir selects the directory rule (listing) or the file rule (read/write).
func ResolveInPackage(packageRoot, requested string, wantDir bool) (target, rel string, err error) {
	raw := strings.TrimSpace(requested)
	if raw == "" {
		raw = "."
	}
	if strings.HasPrefix(raw, "/") {
		return "", "", errors.New("path must be relative to the skill package root")
	}
	rel = path.Clean(raw)
	escape := errors.New("path must stay within the skill package root")
	if strings.HasPrefix(rel, "..") {
		return "", "", escape
	}
	target = mounts.Resolve(filepath.Join(packageRoot, rel))
	if !mounts.Within(target, packageRoot) {
		return "", "", escape
	}
	if wantDir {
		if st, err := os.Stat(target); err != nil || !st.IsDir() {
			return "", "", fmt.Errorf("Skill directory not found: %s", raw)
		}
		return target, rel, nil
	}
	if !mounts.Within(filepath.Dir(target), packageRoot) {
		return "", "", escape
	}
	return target, rel, nil
}

// located is a path requested inside a skill's package, resolved by §10.4.
type located struct {
	skill       *Skill
	root        string // the package root, resolved
	target, rel string
}

// locate finds skill name and resolves requested inside its package.
func (s *Store) locate(name, requested string, wantDir bool) (*located, error) {
	sk, err := s.require(name)
	if err != nil {
		return nil, err
	}
	root := normalize(sk.PackageRoot)
	if root == "" {
		return nil, fmt.Errorf("Skill \"%s\" has no package_root", sk.Name)
	}
	target, rel, err := ResolveInPackage(root, requested, wantDir)
	if err != nil {
		return nil, err
	}
	return &located{skill: sk, root: root, target: target, rel: rel}, nil
}

// FileEntry is one entry of a skill file listing.
type FileEntry struct {
	Path  string `json:"path"`
	Name  string `json:"name"`
	IsDir bool   `json:"is_dir"`
	Size  *int64 `json:"size"`
}

// SkillRef is the `{"name": …}` object file operations answer with.
type SkillRef struct {
	Name string `json:"name"`
}

// FileListing is the box_list_skill_files response.
type FileListing struct {
	Skill     SkillRef    `json:"skill"`
	BasePath  string      `json:"base_path"`
	Entries   []FileEntry `json:"entries"`
	Truncated bool        `json:"truncated"`
}

// ListFiles implements §11.8 list.
func (s *Store) ListFiles(name, requested string, includeHidden bool, maxEntries int) (*FileListing, error) {
	if maxEntries <= 0 {
		return nil, errors.New("max_entries must be a positive integer")
	}
	maxEntries = min(maxEntries, MaxListedFiles)
	loc, err := s.locate(name, requested, true)
	if err != nil {
		return nil, err
	}
	sk, root, dir, rel := loc.skill, loc.root, loc.target, loc.rel
	entries, err := readDirLimited(dir, MaxDirectoryEntries)
	if errors.Is(err, errTooManyEntries) {
		return nil, errors.New("Skill directory exceeds the configured entry limit")
	}
	if err != nil {
		return nil, osError(err)
	}
	out := &FileListing{Skill: SkillRef{sk.Name}, BasePath: rel, Entries: []FileEntry{}}
	visible := 0
	for _, e := range entries {
		if !includeHidden && strings.HasPrefix(e.Name(), ".") {
			continue
		}
		visible++
		if len(out.Entries) >= maxEntries {
			continue
		}
		p := e.Name()
		if rel != "." {
			p = rel + "/" + e.Name()
		}
		full := filepath.Join(dir, e.Name())
		st, err := os.Stat(full)
		if err != nil || (e.Type()&fs.ModeSymlink != 0 && !mounts.Within(mounts.Resolve(full), root)) {
			// Dangling, or a symlink leaving the package: describe the link itself.
			st, err = os.Lstat(full)
			if err != nil {
				continue
			}
		}
		fe := FileEntry{Path: p, Name: e.Name(), IsDir: st.IsDir()}
		if !fe.IsDir {
			size := st.Size()
			fe.Size = &size
		}
		out.Entries = append(out.Entries, fe)
	}
	out.Truncated = visible > maxEntries
	return out, nil
}

// FileContent is the box_read_skill_file response.
type FileContent struct {
	Skill   SkillRef `json:"skill"`
	Path    string   `json:"path"`
	Content string   `json:"content"`
}

// ReadFile implements §11.8 read.
func (s *Store) ReadFile(name, requested string) (*FileContent, error) {
	loc, err := s.locate(name, requested, false)
	if err != nil {
		return nil, err
	}
	sk, target, rel := loc.skill, loc.target, loc.rel
	if st, err := os.Stat(target); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("Skill file not found: %s", rel)
	}
	content, err := readTextLimited(target, "Skill file "+rel)
	if err != nil {
		return nil, err
	}
	return &FileContent{Skill: SkillRef{sk.Name}, Path: rel, Content: content}, nil
}

// WriteResult is the box_write_skill_file response.
type WriteResult struct {
	Skill        SkillRef `json:"skill"`
	Path         string   `json:"path"`
	BytesWritten int      `json:"bytes_written"`
}

// WriteFile implements §11.8 write, atomically.
func (s *Store) WriteFile(name, requested, content string) (*WriteResult, error) {
	loc, err := s.locate(name, requested, false)
	if err != nil {
		return nil, err
	}
	sk, root, target, rel := loc.skill, loc.root, loc.target, loc.rel
	if len(content) > MaxTextBytes {
		return nil, fmt.Errorf("Skill file %s exceeds the %d-byte limit", rel, MaxTextBytes)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, osError(err)
	}
	// Re-check after creating parents: nothing on the way may have become a symlink out.
	if !mounts.Within(mounts.Resolve(filepath.Dir(target)), root) {
		return nil, errors.New("path must stay within the skill package root")
	}
	if err := atomicWrite(target, []byte(content)); err != nil {
		return nil, err
	}
	return &WriteResult{Skill: SkillRef{sk.Name}, Path: rel, BytesWritten: len(content)}, nil
}

// atomicWrite replaces target with data atomically (atomicfile); an existing file keeps its
// permission bits, a directory is refused with the OS's error.
func atomicWrite(target string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Lstat(target); err == nil {
		if st.IsDir() {
			return osError(&os.PathError{Op: "open", Path: target, Err: syscall.EISDIR})
		}
		if st.Mode().IsRegular() {
			mode = st.Mode().Perm()
		}
	}
	return osError(atomicfile.Write(target, data, mode))
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// copyTree copies src into a new directory dst (which must not exist) through a sibling
// temporary directory and one rename. Regular files and directories are copied; symlinks
// are not followed and not copied (they could point anywhere); dst is skipped if it lies
// inside src.
func copyTree(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".copy-"+randomSuffix())
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return osError(err)
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return osError(err)
		}
		if p == dst || p == tmp {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(tmp, rel)
		switch {
		case d.IsDir():
			return osError(os.MkdirAll(out, 0o755))
		case d.Type().IsRegular():
			return copyFile(p, out)
		}
		return nil
	})
	if err == nil {
		err = osError(os.Rename(tmp, dst))
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return osError(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return osError(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return osError(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return osError(err)
	}
	return osError(out.Close())
}
