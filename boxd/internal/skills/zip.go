package skills

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Zip limits of §11.11.
const (
	MaxZipCompressedBytes = 20 << 20
	MaxZipEntries         = 512
	MaxZipEntryBytes      = 16 << 20
	MaxZipTotalBytes      = 64 << 20
	MaxZipRatio           = 100
	zipCopyChunk          = 64 << 10
	stagingMaxAge         = time.Hour
)

// ZipRequest are the options of box_preview_skill_zip / box_install_skill_zip.
type ZipRequest struct {
	Filename     string
	SourceSubdir string
	TargetSuffix string
	SourcePaths  []string // install only
	SourcePath   string   // install only (legacy single selection)
}

type member struct {
	f   *zip.File
	rel string // the normalised name, relative to the destination
	dir bool
}

// ExtractZip validates every entry of archive against §11.11 before writing anything, then
// streams the files into dest (a new directory) with running size counters. hook, when
// set, is called after each file.
func ExtractZip(archive []byte, dest string, hook func(name string)) error {
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		return errors.New("Uploaded file must be a valid .zip archive")
	}
	if err := os.MkdirAll(dest, perm.Dir); err != nil {
		return osError(err)
	}
	root := mounts.Resolve(dest)
	if len(zr.File) > MaxZipEntries {
		return fmt.Errorf("Archive contains too many entries (maximum %d)", MaxZipEntries)
	}
	var members []member
	seen := map[string]bool{}
	var totalCompressed, totalSize uint64
	for _, f := range zr.File {
		name := f.Name
		if name == "" || strings.ContainsRune(name, 0) {
			return errors.New("Archive contains an unsafe empty or NUL path")
		}
		portable := strings.ReplaceAll(name, `\`, "/")
		norm := path.Clean(portable)
		first, _, _ := strings.Cut(norm, "/")
		if strings.HasPrefix(portable, "/") || norm == "." || norm == ".." || norm == "" ||
			strings.HasPrefix(norm, "../") || (len(first) >= 2 && first[1] == ':') {
			return fmt.Errorf("Archive contains an unsafe path: %s", name)
		}
		d := mounts.Resolve(filepath.Join(root, filepath.FromSlash(norm)))
		if !mounts.Within(d, root) || d == root {
			return fmt.Errorf("Archive contains an unsafe path: %s", name)
		}
		if seen[d] {
			return fmt.Errorf("Archive contains a duplicate path: %s", name)
		}
		seen[d] = true
		unixMode := (f.ExternalAttrs >> 16) & 0xFFFF
		switch unixMode & 0o170000 {
		case 0o120000:
			return fmt.Errorf("Archive contains a symbolic link: %s", name)
		case 0, 0o100000, 0o040000:
		default:
			return fmt.Errorf("Archive contains a non-regular entry: %s", name)
		}
		isDir := strings.HasSuffix(portable, "/")
		if isDir {
			if f.UncompressedSize64 != 0 {
				return fmt.Errorf("Archive directory has unexpected content: %s", name)
			}
			members = append(members, member{f, norm, true})
			continue
		}
		if f.UncompressedSize64 > MaxZipEntryBytes {
			return fmt.Errorf("Archive entry exceeds the uncompressed size limit: %s", name)
		}
		if f.UncompressedSize64 > 0 && (f.CompressedSize64 == 0 || f.UncompressedSize64 > MaxZipRatio*f.CompressedSize64) {
			return fmt.Errorf("Archive entry exceeds the compression ratio limit: %s", name)
		}
		totalCompressed += f.CompressedSize64
		totalSize += f.UncompressedSize64
		if totalCompressed > MaxZipCompressedBytes {
			return errors.New("Archive exceeds the compressed size limit")
		}
		if totalSize > MaxZipTotalBytes {
			return errors.New("Archive exceeds the total uncompressed size limit")
		}
		members = append(members, member{f, norm, false})
	}
	if totalSize > 0 && (totalCompressed == 0 || totalSize > MaxZipRatio*totalCompressed) {
		return errors.New("Archive exceeds the aggregate compression ratio limit")
	}
	destDir, err := openDirPath(root)
	if err != nil {
		return osError(err)
	}
	defer destDir.close()
	var extracted int64
	for _, m := range members {
		if m.dir {
			d, err := destDir.mkdirAll(m.rel)
			if err != nil {
				return osError(err)
			}
			d.close()
			continue
		}
		parentRel, base := splitRel(m.rel)
		parent, err := destDir.mkdirAll(parentRel)
		if err != nil {
			return osError(err)
		}
		err = extractMember(m, parent, base, &extracted)
		parent.close()
		if err != nil {
			return err
		}
		if hook != nil {
			hook(m.f.Name)
		}
	}
	return nil
}

// extractMember writes one file member as name of parent (created exclusively, perm.Exec() when
// the archived mode has an execute bit, else perm.File()); a failed file is removed.
func extractMember(m member, parent *dir, name string, extracted *int64) error {
	fd, err := unix.Openat(parent.fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return osError(&os.PathError{Op: "open", Path: parent.join(name), Err: err})
	}
	out := os.NewFile(uintptr(fd), parent.join(name))
	n, err := extractFile(m.f, out, extracted)
	if err == nil && uint64(n) != m.f.UncompressedSize64 {
		err = fmt.Errorf("Archive entry size changed while extracting: %s", m.f.Name)
	}
	mode := perm.File()
	if (m.f.ExternalAttrs>>16)&0o111 != 0 {
		mode = perm.Exec()
	}
	if err == nil {
		err = osError(out.Chmod(mode))
	}
	if cerr := out.Close(); err == nil {
		err = osError(cerr)
	}
	if err != nil {
		_ = unix.Unlinkat(parent.fd(), name, 0)
	}
	return err
}

// extractFile copies one member in 64 KiB pieces into out, enforcing the per-entry and total
// limits on the bytes actually produced (not the declared sizes).
func extractFile(f *zip.File, out *os.File, total *int64) (int64, error) {
	rc, err := f.Open()
	if err != nil {
		return 0, fmt.Errorf("Archive entry cannot be read: %s", f.Name)
	}
	defer rc.Close()
	buf := make([]byte, zipCopyChunk)
	var n int64
	for {
		k, rerr := rc.Read(buf)
		if k > 0 {
			n += int64(k)
			*total += int64(k)
			if n > MaxZipEntryBytes {
				return n, fmt.Errorf("Archive entry exceeds the uncompressed size limit: %s", f.Name)
			}
			if *total > MaxZipTotalBytes {
				return n, errors.New("Archive exceeds the total uncompressed size limit")
			}
			if _, err := out.Write(buf[:k]); err != nil {
				return n, osError(err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, zip.ErrChecksum) || errors.Is(rerr, zip.ErrFormat) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				// archive/zip checks the declared size and CRC itself.
				return n, fmt.Errorf("Archive entry size changed while extracting: %s", f.Name)
			}
			return n, fmt.Errorf("Archive entry cannot be read: %s", f.Name)
		}
	}
	return n, osError(out.Sync())
}

// TargetStem turns an upload filename into the install directory stem (§11.9 step 5).
func TargetStem(filename string) string {
	base := filepath.Base(strings.TrimSpace(filename))
	if strings.TrimSpace(filename) == "" {
		base = ""
	}
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	var b strings.Builder
	for _, r := range base {
		if unicode.IsLetter(r) || unicode.IsNumber(r) || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	stem := strings.Trim(b.String(), "-_")
	if stem == "" {
		return defaultUploadStemName
	}
	return stem
}

func portablePath(p string) string {
	return strings.Trim(strings.ReplaceAll(strings.TrimSpace(p), `\`, "/"), "/")
}

// staged is an extracted upload in the staging directory.
type staged struct {
	dir  string // the staging directory of this upload (removed afterwards)
	root string // the archive root (after the single-directory rule and source_subdir)
	base *dir   // handle on dir
	rel  string // root relative to dir
}

// stage extracts archive into a fresh staging directory and applies source_subdir.
func (s *Store) stage(archive []byte, subdir string) (*staged, error) {
	if len(archive) == 0 {
		return nil, errors.New("Uploaded file is empty")
	}
	if len(archive) > MaxZipCompressedBytes {
		return nil, fmt.Errorf("Uploaded archive exceeds the compressed size limit (%d bytes)", MaxZipCompressedBytes)
	}
	s.sweepStaging()
	if err := os.MkdirAll(s.staging, 0o700); err != nil {
		return nil, osError(err)
	}
	dir, err := os.MkdirTemp(s.staging, "upload-")
	if err != nil {
		return nil, osError(err)
	}
	st := &staged{dir: dir}
	extracted := filepath.Join(dir, "extracted")
	if err := ExtractZip(archive, extracted, s.hooks.AfterExtractFile); err != nil {
		st.remove()
		return nil, err
	}
	root := extracted
	if entries, err := os.ReadDir(extracted); err == nil && len(entries) == 1 && entries[0].IsDir() {
		root = filepath.Join(extracted, entries[0].Name())
	}
	if sub := portablePath(subdir); sub != "" {
		norm := path.Clean(sub)
		outside := errors.New("source_subdir must stay within the uploaded archive")
		if strings.HasPrefix(norm, "..") || strings.HasPrefix(norm, "/") {
			st.remove()
			return nil, outside
		}
		target := mounts.Resolve(filepath.Join(root, norm))
		if !mounts.Within(target, mounts.Resolve(root)) {
			st.remove()
			return nil, outside
		}
		if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
			st.remove()
			return nil, fmt.Errorf("source_subdir does not exist in the uploaded archive: %s", sub)
		}
		root = target
	}
	st.root = root
	if st.base, err = openDirPath(dir); err != nil {
		st.remove()
		return nil, osError(err)
	}
	rel, _ := filepath.Rel(dir, root)
	st.rel = filepath.ToSlash(rel)
	return st, nil
}

func (st *staged) remove() {
	if st.base != nil {
		st.base.close()
	}
	_ = os.RemoveAll(st.dir)
}

// sweepStaging removes staging directories left by an install that was interrupted (a
// killed process) once they are older than stagingMaxAge, so a concurrent runtime on the
// same store is never disturbed.
func (s *Store) sweepStaging() {
	entries, err := os.ReadDir(s.staging)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > stagingMaxAge {
			_ = os.RemoveAll(filepath.Join(s.staging, e.Name()))
		}
	}
}

// candidates discovers the packages of a staged upload and where each would be installed.
func (s *Store) candidates(st *staged, req ZipRequest) ([]Skill, error) {
	pkgs, err := discover(st.base, st.rel, ScanDepth)
	if err != nil {
		return nil, err
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("No SKILL.md found in %s or its subdirectories (max depth: %d)", st.root, ScanDepth)
	}
	stem := TargetStem(req.Filename)
	out := make([]Skill, 0, len(pkgs))
	for _, p := range pkgs {
		sk, err := loadFound(st.base, p)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(st.root, p.path)
		if rel == "." {
			rel = ""
		}
		rel = filepath.ToSlash(rel)
		sk.SourcePath = &rel
		target := stem
		if leaf := path.Base("/" + rel); rel != "" && leaf != stem {
			target += "-" + leaf
		}
		if req.TargetSuffix != "" {
			target += "-" + req.TargetSuffix
		}
		sk.PackageRoot = filepath.Join(s.Root, target)
		out = append(out, sk)
	}
	sort.SliceStable(out, func(i, j int) bool { return *out[i].SourcePath < *out[j].SourcePath })
	return out, nil
}

// PreviewZip implements §11.9: what an install would produce, nothing installed.
func (s *Store) PreviewZip(archive []byte, req ZipRequest) ([]Skill, error) {
	st, err := s.stage(archive, req.SourceSubdir)
	if err != nil {
		return nil, err
	}
	defer st.remove()
	return s.candidates(st, req)
}

// InstallZip implements §11.10. Each selected package is moved from the staging directory
// to its target with one rename (same file system), so a target either holds the complete
// package or does not exist; on any failure every target created by this call is removed.
func (s *Store) InstallZip(archive []byte, req ZipRequest) ([]Skill, error) {
	st, err := s.stage(archive, req.SourceSubdir)
	if err != nil {
		return nil, err
	}
	defer st.remove()
	previews, err := s.candidates(st, req)
	if err != nil {
		return nil, err
	}
	selected, err := selectCandidates(previews, req)
	if err != nil {
		return nil, err
	}
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	seen := map[string]bool{}
	for _, p := range selected {
		target := filepath.Base(p.PackageRoot) // one name right under the tenant root
		if seen[target] {
			return nil, fmt.Errorf("Duplicate target directory selected: %s", p.PackageRoot)
		}
		if _, err := root.lstat(target); err == nil {
			return nil, fmt.Errorf("Skill directory already exists: %s", p.PackageRoot)
		}
		seen[target] = true
	}
	var created []string
	var scanned []Skill
	rollback := func() {
		for _, c := range created {
			_ = os.RemoveAll(filepath.Join(s.Root, c))
		}
	}
	for _, p := range selected {
		target := filepath.Base(p.PackageRoot)
		src := path.Join(st.rel, *p.SourcePath)
		if err := moveDir(st.base, src, root, target); err != nil {
			rollback()
			return nil, err
		}
		created = append(created, target)
		_ = root.f.Sync()
		if s.hooks.AfterInstallPackage != nil {
			s.hooks.AfterInstallPackage(root.join(target))
		}
		sk, err := s.scanIn(root, target)
		if err != nil {
			rollback()
			return nil, err
		}
		scanned = append(scanned, *sk)
	}
	// Each installed skill as listed (the first listed skill of its name), else as scanned:
	// one listing for all of them.
	listed := map[string]Skill{}
	if all, err := s.list(root); err == nil {
		for i := len(all) - 1; i >= 0; i-- {
			listed[all[i].Name] = all[i]
		}
	}
	out := make([]Skill, 0, len(scanned))
	for _, sk := range scanned {
		if got, ok := listed[sk.Name]; ok {
			sk = got
		}
		out = append(out, sk)
	}
	return out, nil
}

func selectCandidates(previews []Skill, req ZipRequest) ([]Skill, error) {
	var wanted []string
	add := func(p string) {
		for _, w := range wanted {
			if w == p {
				return
			}
		}
		wanted = append(wanted, p)
	}
	for _, p := range req.SourcePaths {
		add(portablePath(p))
	}
	if legacy := portablePath(req.SourcePath); legacy != "" {
		add(legacy)
	}
	if len(wanted) == 0 && len(previews) == 1 {
		return previews, nil
	}
	names := make([]string, len(previews))
	byPath := map[string]Skill{}
	for i, p := range previews {
		names[i] = *p.SourcePath
		if names[i] == "" {
			names[i] = "."
		}
		byPath[*p.SourcePath] = p
	}
	if len(wanted) == 0 {
		return nil, fmt.Errorf("Multiple skills found. Please choose one or more source_paths: %s", strings.Join(names, ", "))
	}
	out := make([]Skill, 0, len(wanted))
	for _, w := range wanted {
		p, ok := byPath[w]
		if !ok {
			return nil, fmt.Errorf("Invalid source_path \"%s\". Available: %s", w, strings.Join(names, ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

// moveDir renames src of base to name of parent; across file systems (a tenant root mounted
// separately) it falls back to an atomic copy (copyTree stages next to the target, then
// renames).
func moveDir(base *dir, src string, parent *dir, name string) error {
	srcParent, srcName := splitRel(src)
	from, err := base.sub(srcParent)
	if err != nil {
		return osError(err)
	}
	defer from.close()
	err = from.rename(srcName, parent, name)
	if errors.Is(err, unix.EXDEV) {
		tree, err := from.sub(srcName)
		if err != nil {
			return osError(err)
		}
		defer tree.close()
		return copyTree(tree, parent, name)
	}
	return osError(err)
}
