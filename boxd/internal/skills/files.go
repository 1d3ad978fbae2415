package skills

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/atomicfile"
)

// errThroughLink is §10.4's containment refusal for a path that meets a symbolic link: no
// skill file action follows one (where it would lead can change between two system calls).
func errThroughLink(raw string) error {
	return fmt.Errorf("path must stay within the skill package root: %s passes through a symbolic link, which skill file actions do not follow", raw)
}

// cleanRel applies the lexical rules of §10.4 (steps 1 and 2) to a requested path and
// returns it trimmed (raw, for messages) and normalised (rel).
func cleanRel(requested string) (raw, rel string, err error) {
	raw = strings.TrimSpace(requested)
	if raw == "" {
		raw = "."
	}
	if strings.HasPrefix(raw, "/") {
		return "", "", errors.New("path must be relative to the skill package root")
	}
	rel = path.Clean(raw)
	if strings.HasPrefix(rel, "..") {
		return "", "", errors.New("path must stay within the skill package root")
	}
	return raw, rel, nil
}

// ResolveInPackage applies the path rules of §10.4 to a path requested inside the package
// directory packageRoot and returns the target and the normalised relative path; wantDir
// selects the directory rule (listing) or the file rule (read/write). The store itself does
// not use the returned path: it works on the directory handles resolveIn opens.
func ResolveInPackage(packageRoot, requested string, wantDir bool) (target, rel string, err error) {
	raw, rel, err := cleanRel(requested)
	if err != nil {
		return "", "", err
	}
	pkg, err := openDirPath(packageRoot)
	if err != nil {
		return "", "", osError(err)
	}
	defer pkg.close()
	d, name, err := resolveIn(pkg, raw, rel, wantDir, false)
	if err != nil {
		return "", "", err
	}
	defer d.close()
	if name != "" {
		if st, err := d.lstat(name); err == nil && isSymlink(st) {
			return "", "", errThroughLink(raw)
		}
	}
	return pkg.join(rel), rel, nil
}

// resolveIn opens what rel names inside the package open at pkg, through no symlink: the
// directory itself (wantDir, name "") or the directory holding the file and the file's name
// (create makes missing parent directories).
func resolveIn(pkg *dir, raw, rel string, wantDir, create bool) (d *dir, name string, err error) {
	if wantDir {
		d, err := pkg.sub(rel)
		switch {
		case pkg.throughLink(rel, err):
			return nil, "", errThroughLink(raw)
		case err != nil:
			return nil, "", fmt.Errorf("Skill directory not found: %s", raw)
		}
		return d, "", nil
	}
	parent, name := splitRel(rel)
	if rel == "." {
		parent, name = ".", "."
	}
	if create {
		d, err = pkg.mkdirAll(parent)
	} else {
		d, err = pkg.sub(parent)
	}
	switch {
	case pkg.throughLink(parent, err):
		return nil, "", errThroughLink(raw)
	case err != nil && !create:
		return nil, "", fmt.Errorf("Skill file not found: %s", rel)
	case err != nil:
		return nil, "", osError(err)
	}
	return d, name, nil
}

// located is a path requested inside a skill's package, resolved by §10.4.
type located struct {
	skill    *Skill
	pkg      *dir // the package directory
	raw, rel string
}

func (l *located) close() { l.pkg.close() }

// locate finds skill name, opens its package and applies §10.4's lexical rules to requested.
func (s *Store) locate(name, requested string) (*located, error) {
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	sk, err := s.requireIn(root, name)
	if err != nil {
		return nil, err
	}
	raw, rel, err := cleanRel(requested)
	if err != nil {
		return nil, err
	}
	pkg, err := openPackage(root, sk)
	if err != nil {
		return nil, err
	}
	return &located{skill: sk, pkg: pkg, raw: raw, rel: rel}, nil
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

// ListFiles implements §11.8 list. An entry that is a symlink is described by what it points
// to when that stays inside the package (resolved by the kernel beneath the package handle,
// openat2 RESOLVE_BENEATH), else as the link itself.
func (s *Store) ListFiles(name, requested string, includeHidden bool, maxEntries int) (*FileListing, error) {
	if maxEntries <= 0 {
		return nil, errors.New("max_entries must be a positive integer")
	}
	maxEntries = min(maxEntries, MaxListedFiles)
	loc, err := s.locate(name, requested)
	if err != nil {
		return nil, err
	}
	defer loc.close()
	d, _, err := resolveIn(loc.pkg, loc.raw, loc.rel, true, false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	sk, rel := loc.skill, loc.rel
	entries, err := d.readDir(MaxDirectoryEntries)
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
		st, err := d.lstat(e.Name())
		if err != nil {
			continue // gone meanwhile
		}
		if isSymlink(st) {
			if target, err := loc.pkg.statBeneath(p); err == nil {
				st = target
			}
		}
		fe := FileEntry{Path: p, Name: e.Name(), IsDir: isDir(st)}
		if !fe.IsDir {
			size := st.Size
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

// ReadFile implements §11.8 read: the file must be a regular file (not a symlink, FIFO,
// device or directory) reached through no symlink.
func (s *Store) ReadFile(name, requested string) (*FileContent, error) {
	loc, err := s.locate(name, requested)
	if err != nil {
		return nil, err
	}
	defer loc.close()
	d, base, err := resolveIn(loc.pkg, loc.raw, loc.rel, false, false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	content, _, err := readText(d, base, "Skill file "+loc.rel)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, errThroughLink(loc.raw)
	case errors.Is(err, errNotRegular), errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("Skill file not found: %s", loc.rel)
	case err != nil:
		return nil, osError(err)
	}
	return &FileContent{Skill: SkillRef{loc.skill.Name}, Path: loc.rel, Content: content}, nil
}

// WriteResult is the box_write_skill_file response.
type WriteResult struct {
	Skill        SkillRef `json:"skill"`
	Path         string   `json:"path"`
	BytesWritten int      `json:"bytes_written"`
}

// WriteFile implements §11.8 write, atomically, in the directory handle of the file's parent
// (missing parents are created one component at a time, never through a symlink).
func (s *Store) WriteFile(name, requested, content string) (*WriteResult, error) {
	loc, err := s.locate(name, requested)
	if err != nil {
		return nil, err
	}
	defer loc.close()
	if len(content) > MaxTextBytes {
		return nil, fmt.Errorf("Skill file %s exceeds the %d-byte limit", loc.rel, MaxTextBytes)
	}
	d, base, err := resolveIn(loc.pkg, loc.raw, loc.rel, false, true)
	if err != nil {
		return nil, err
	}
	defer d.close()
	if st, err := d.lstat(base); err == nil && isSymlink(st) {
		return nil, errThroughLink(loc.raw)
	}
	if err := atomicWrite(d, base, []byte(content)); err != nil {
		return nil, err
	}
	return &WriteResult{Skill: SkillRef{loc.skill.Name}, Path: loc.rel, BytesWritten: len(content)}, nil
}

// atomicWrite replaces name of d with data atomically (atomicfile.WriteAt); an existing file
// keeps its permission bits, a directory is refused with the OS's error.
func atomicWrite(d *dir, name string, data []byte) error {
	mode := perm.File()
	if st, err := d.lstat(name); err == nil {
		if isDir(st) {
			return osError(&os.PathError{Op: "open", Path: d.join(name), Err: syscall.EISDIR})
		}
		if isRegular(st) {
			mode = os.FileMode(st.Mode & 0o777)
		}
	}
	return osError(atomicfile.WriteAt(d.f, name, data, mode))
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
