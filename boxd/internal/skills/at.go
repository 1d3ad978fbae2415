package skills

import (
	"errors"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// dir is an open directory of the skill store. Every operation below is resolved by the kernel
// relative to the handle and never follows a symbolic link: code in a sandbox that has a
// package mounted rw can rename, swap (renameat2 RENAME_EXCHANGE) and replace anything in it
// while boxd works, and still cannot make boxd read, list, create or remove anything outside
// the handle's directory. Paths given to it are clean relative paths (§10.4's lexical step
// has refused absolute ones and "..").
type dir struct {
	f *os.File
	// path is what the directory was opened as: it names it in messages and package_root,
	// and is never used to reach it again.
	path string
	// walk resolves component by component (O_NOFOLLOW|O_DIRECTORY each) instead of one
	// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS); set when openat2 is missing (ENOSYS,
	// kernels before 5.6) and by the tests of both ways.
	walk bool
}

// errNotRegular is returned for a file that exists but is not a regular file (a directory,
// FIFO, socket or device) where one is read.
var errNotRegular = errors.New("not a regular file")

// openDirPath opens a directory the store itself names (its root, the staging directory):
// those paths are boxd's own configuration, outside every sandbox's reach.
func openDirPath(p string) (*dir, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return &dir{f: os.NewFile(uintptr(fd), p), path: p}, nil
}

func (d *dir) fd() int { return int(d.f.Fd()) }

func (d *dir) close() { _ = d.f.Close() }

// join names rel inside d (for messages and package_root only).
func (d *dir) join(rel string) string {
	if rel == "" || rel == "." {
		return d.path
	}
	return d.path + "/" + rel
}

// openat opens rel beneath d with flags (O_NOFOLLOW and O_CLOEXEC are always added): no
// component may be a symlink, and nothing can resolve outside d.
func (d *dir) openat(rel string, flags int) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if rel == "" || rel == "." {
		return unix.Openat(d.fd(), ".", flags, 0)
	}
	if !d.walk {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		for range 8 {
			fd, err := unix.Openat2(d.fd(), rel, &how)
			if err == unix.EAGAIN || err == unix.EINTR { // a concurrent rename: the kernel asks for a retry
				continue
			}
			if err == unix.ENOSYS {
				d.walk = true
				break
			}
			return fd, err
		}
	}
	return d.walkOpen(rel, flags)
}

// walkOpen is openat without openat2: each directory on the way is opened from the previous
// one with O_PATH|O_DIRECTORY|O_NOFOLLOW, the last component with flags.
func (d *dir) walkOpen(rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur, owned := d.fd(), -1
	defer func() {
		if owned >= 0 {
			unix.Close(owned)
		}
	}()
	for i, p := range parts {
		switch p {
		case "", ".":
			if i < len(parts)-1 {
				continue
			}
		case "..":
			return -1, unix.EXDEV // never produced by the store; refused as openat2 would
		}
		if i == len(parts)-1 {
			if p == "" {
				p = "."
			}
			return unix.Openat(cur, p, flags, 0)
		}
		next, err := unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if owned >= 0 {
			unix.Close(owned)
		}
		cur, owned = next, next
	}
	return -1, unix.ENOENT
}

// sub opens the directory rel beneath d.
func (d *dir) sub(rel string) (*dir, error) {
	fd, err := d.openat(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.join(rel), Err: err}
	}
	return &dir{f: os.NewFile(uintptr(fd), d.join(rel)), path: d.join(rel), walk: d.walk}, nil
}

// mkdirAll opens the directory rel beneath d, creating missing components (perm.Dir) one at a
// time: each is created with mkdirat and opened with O_NOFOLLOW|O_DIRECTORY from its parent.
func (d *dir) mkdirAll(rel string) (*dir, error) {
	cur, err := d.sub(".")
	if err != nil {
		return nil, err
	}
	for _, p := range strings.Split(rel, "/") {
		if p == "" || p == "." {
			continue
		}
		if p == ".." {
			cur.close()
			return nil, &os.PathError{Op: "mkdir", Path: d.join(rel), Err: unix.EXDEV}
		}
		if err := unix.Mkdirat(cur.fd(), p, uint32(perm.Dir)); err != nil && err != unix.EEXIST {
			cur.close()
			return nil, &os.PathError{Op: "mkdir", Path: cur.join(p), Err: err}
		}
		next, err := cur.sub(p)
		cur.close()
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// lstat describes name, one component of d, without following it.
func (d *dir) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	return st, nil
}

// statBeneath describes rel beneath d following symlinks that stay beneath d (openat2
// RESOLVE_BENEATH, O_PATH: nothing is opened for reading). It fails without openat2.
func (d *dir) statBeneath(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if d.walk {
		return st, unix.ENOSYS
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(d.fd(), rel, &how)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

func isDir(st unix.Stat_t) bool     { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isRegular(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }
func isSymlink(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFLNK }

// readRegular reads name, one component of d, if it is a regular file of at most limit
// bytes (else errTooLarge). It is looked at before it is opened, so a FIFO or device is never
// opened in the common case; the open itself is O_NONBLOCK|O_NOFOLLOW (a FIFO swapped in
// meanwhile cannot block it) and the opened file must be the regular file looked at.
func (d *dir) readRegular(name string, limit int64) ([]byte, unix.Stat_t, error) {
	before, err := d.lstat(name)
	if err != nil {
		return nil, before, err
	}
	if isSymlink(before) {
		return nil, before, &os.PathError{Op: "open", Path: d.join(name), Err: unix.ELOOP}
	}
	if !isRegular(before) {
		return nil, before, errNotRegular
	}
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, before, &os.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(name))
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, st, &os.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	if !isRegular(st) || st.Ino != before.Ino || st.Dev != before.Dev {
		return nil, st, errNotRegular
	}
	if st.Size > limit {
		return nil, st, errTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, st, &os.PathError{Op: "read", Path: d.join(name), Err: err}
	}
	if int64(len(data)) > limit {
		return nil, st, errTooLarge
	}
	return data, st, nil
}

var errTooLarge = errors.New("file too large")

// readDir reads at most limit entries of d (more → errTooManyEntries), sorted by name.
func (d *dir) readDir(limit int) ([]fs.DirEntry, error) {
	// A new open file description: reading does not move another reader's offset.
	fd, err := unix.Openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	var all []fs.DirEntry
	for {
		batch, err := f.ReadDir(256)
		all = append(all, batch...)
		if len(all) > limit {
			return all, errTooManyEntries
		}
		if errors.Is(err, io.EOF) || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name() < all[j].Name() })
	return all, nil
}

// rename moves name of d to newName of to (renameat: neither is followed if a symlink).
func (d *dir) rename(name string, to *dir, newName string) error {
	if err := unix.Renameat(d.fd(), name, to.fd(), newName); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(name), New: to.join(newName), Err: err}
	}
	return nil
}

// copyTree copies directory src into a new directory name of parent (which must not exist)
// through a sibling temporary directory and one rename. Directories and regular files are
// copied, everything else (symlinks, FIFOs, devices) is skipped; a directory that is the
// temporary directory itself (src is parent) is skipped.
func copyTree(src, parent *dir, name string) error {
	tmp := "." + name + ".copy-" + randomSuffix()
	out, err := parent.mkdirAll(tmp)
	if err != nil {
		return osError(err)
	}
	self, err := out.lstat(".")
	if err == nil {
		err = copyInto(src, out, self)
	}
	out.close()
	if err == nil {
		err = osError(parent.rename(tmp, parent, name))
	}
	if err != nil {
		_ = os.RemoveAll(parent.join(tmp))
		return err
	}
	return nil
}

func copyInto(src, dst *dir, skip unix.Stat_t) error {
	entries, err := src.readDir(MaxScanEntries)
	if err != nil {
		return osError(err)
	}
	for _, e := range entries {
		st, err := src.lstat(e.Name())
		if err != nil {
			continue // gone meanwhile
		}
		switch {
		case isDir(st) && (st.Dev != skip.Dev || st.Ino != skip.Ino):
			if err := copyDir(src, dst, e.Name(), skip); err != nil {
				return err
			}
		case isRegular(st):
			if err := copyFile(src, dst, e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyDir(src, dst *dir, name string, skip unix.Stat_t) error {
	from, err := src.sub(name)
	if err != nil {
		return nil // replaced by something else meanwhile: skipped like any non-directory
	}
	defer from.close()
	to, err := dst.mkdirAll(name)
	if err != nil {
		return osError(err)
	}
	defer to.close()
	return copyInto(from, to, skip)
}

func copyFile(src, dst *dir, name string) error {
	fd, err := unix.Openat(src.fd(), name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // replaced by a symlink meanwhile: skipped
	}
	in := os.NewFile(uintptr(fd), src.join(name))
	defer in.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || !isRegular(st) {
		return nil
	}
	ofd, err := unix.Openat(dst.fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, st.Mode&0o777)
	if err != nil {
		return osError(&os.PathError{Op: "open", Path: dst.join(name), Err: err})
	}
	out := os.NewFile(uintptr(ofd), dst.join(name))
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return osError(err)
	}
	return osError(out.Close())
}

// splitRel splits a clean relative path into its directory ("." when none) and last name.
func splitRel(rel string) (string, string) {
	dirPart, base := path.Split(rel)
	if dirPart == "" {
		return ".", base
	}
	return strings.TrimSuffix(dirPart, "/"), base
}

// throughLink reports whether opening rel beneath d failed with err because of a symlink on
// the way: ELOOP, or ENOTDIR where a component is a symlink (O_DIRECTORY|O_NOFOLLOW on a
// link). It only chooses an error message.
func (d *dir) throughLink(rel string, err error) bool {
	if errors.Is(err, unix.ELOOP) {
		return true
	}
	if !errors.Is(err, unix.ENOTDIR) {
		return false
	}
	cur, err := d.sub(".")
	if err != nil {
		return false
	}
	defer func() { cur.close() }()
	for _, p := range strings.Split(rel, "/") {
		if p == "" || p == "." {
			continue
		}
		if st, err := cur.lstat(p); err != nil || isSymlink(st) {
			return err == nil
		}
		next, err := cur.sub(p)
		if err != nil {
			return false
		}
		cur.close()
		cur = next
	}
	return false
}
