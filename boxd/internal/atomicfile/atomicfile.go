// Package atomicfile replaces files so that a crash leaves the old or the new content, never a
// mix: a temporary file in the same directory, fsync, rename over the target, fsync of the
// directory.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Write replaces path with data, with permission bits perm. Errors are the OS's own (the
// caller renders them); the temporary file is removed on failure.
func Write(path string, data []byte, perm os.FileMode) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return WriteAt(dir, filepath.Base(path), data, perm)
}

// WriteAt is Write relative to an open directory: name (one path component) of dir is
// replaced, and everything happens through the handle, never by path: the temporary file is
// created with openat(O_CREAT|O_EXCL|O_NOFOLLOW) in dir, written, fsynced, renamed over name
// with renameat within dir, and dir is fsynced. Whatever is renamed or swapped around dir
// meanwhile, nothing is created or replaced outside it; a symlink at name is replaced, never
// followed.
func WriteAt(dir *os.File, name string, data []byte, perm os.FileMode) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return &os.PathError{Op: "write", Path: name, Err: errors.New("not a single path component")}
	}
	dfd := int(dir.Fd())
	var tmp string
	var fd int
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		tmp = "." + name + ".tmp-" + hex.EncodeToString(b[:])
		var err error
		fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), tmp), Err: err}
		}
		break
	}
	committed := false
	defer func() {
		if !committed {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), tmp))
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return &os.LinkError{Op: "rename", Old: filepath.Join(dir.Name(), tmp), New: filepath.Join(dir.Name(), name), Err: err}
	}
	committed = true
	_ = dir.Sync()
	return nil
}
