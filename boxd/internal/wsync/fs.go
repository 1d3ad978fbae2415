package wsync

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Kind is the type of an entry.
type Kind string

const (
	KindFile    Kind = "f"
	KindDir     Kind = "d"
	KindSymlink Kind = "l"
)

// Entry describes one path of a tree. Only regular files, directories and symlinks are
// entries; everything else is skipped.
type Entry struct {
	Path string `json:"p"`
	Kind Kind   `json:"k"`
	// Mode is the permission bits (files and directories; setuid, setgid and sticky are
	// never carried).
	Mode uint32 `json:"m,omitempty"`
	// Size, MTime (Unix nanoseconds) and Hash (hex SHA-256 of the content): files.
	Size  int64  `json:"s,omitempty"`
	MTime int64  `json:"t,omitempty"`
	Hash  string `json:"h,omitempty"`
	// Link is a symlink's target, verbatim (never resolved).
	Link string `json:"l,omitempty"`
}

// sameContent: what a sync must carry is equal (a file's mtime alone is not a change;
// directories only differ by their kind here, their modes are applied without conflicts).
func (e Entry) sameContent(o Entry) bool {
	if e.Kind != o.Kind {
		return false
	}
	switch e.Kind {
	case KindFile:
		return e.Mode == o.Mode && e.Size == o.Size && e.Hash != "" && e.Hash == o.Hash
	case KindSymlink:
		return e.Link == o.Link
	case KindDir:
		return e.Mode == o.Mode
	}
	return false
}

// statKey identifies one version of a file on one side: a hash computed for a key stays
// valid while the key does. ctime cannot be set by a user, so a write that restores the
// mtime still changes the key.
type statKey struct {
	Dev   uint64 `json:"d"`
	Ino   uint64 `json:"i"`
	Size  int64  `json:"s"`
	MTime int64  `json:"m"`
	CTime int64  `json:"c"`
}

func keyOf(st *unix.Stat_t) statKey {
	return statKey{
		Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size, //nolint:unconvert // Dev is not uint64 everywhere
		MTime: st.Mtim.Nano(), CTime: st.Ctim.Nano(),
	}
}

func (k statKey) String() string {
	return fmt.Sprintf("%d:%d:%d:%d:%d", k.Dev, k.Ino, k.Size, k.MTime, k.CTime)
}

func parseKey(s string) (statKey, error) {
	var k statKey
	n, err := fmt.Sscanf(s, "%d:%d:%d:%d:%d", &k.Dev, &k.Ino, &k.Size, &k.MTime, &k.CTime)
	if err != nil || n != 5 || k.String() != s {
		return statKey{}, fmt.Errorf("bad stat key %.80q", s)
	}
	return k, nil
}

const (
	// stagingPrefix names wsync's temporary files (at a tree's root) and its marker; no
	// entry of a tree may have a component starting with it.
	stagingPrefix = ".boxd-wsync-"
	// markerName holds, at the root of each tree in the sandbox, the id of the Session whose
	// base describes it.
	markerName = stagingPrefix + "session"
	// conflictInfix names the sandbox's copy of a path both sides changed.
	conflictInfix = ".sandbox-conflict-"

	maxPathBytes = 4096
	maxNameBytes = 255
	maxLinkBytes = 4095
	maxDepth     = 128
)

const modeMask = 0o777

// validRel checks a relative path as both ends write it: slash-separated, clean, UTF-8,
// no `.`/`..`/empty components, not absolute, bounded.
func validRel(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty path")
	case len(p) > maxPathBytes:
		return fmt.Errorf("path longer than %d bytes", maxPathBytes)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("absolute path %.200q", p)
	case strings.ContainsRune(p, 0) || !utf8.ValidString(p):
		return fmt.Errorf("path %.200q has a NUL or invalid UTF-8", p)
	case path.Clean(p) != p:
		return fmt.Errorf("path %.200q is not clean", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." || c == "." || c == "" {
			return fmt.Errorf("path %.200q has a %q component", p, c)
		}
		if len(c) > maxNameBytes {
			return fmt.Errorf("path %.200q has a component longer than %d bytes", p, maxNameBytes)
		}
	}
	if strings.Count(p, "/") >= maxDepth {
		return fmt.Errorf("path %.200q is deeper than %d", p, maxDepth)
	}
	return nil
}

// filter decides which paths belong to a tree.
type filter struct {
	skip map[string]bool
	// exclude are the relative paths of trees nested in this one (their subtree belongs to
	// them); ancestors are the directories on the way to them, which are walked for other
	// content but are not entries themselves (each side makes them as needed).
	exclude   map[string]bool
	ancestors map[string]bool
}

func newFilter(skip, exclude []string) (*filter, error) {
	f := &filter{skip: map[string]bool{}, exclude: map[string]bool{}, ancestors: map[string]bool{}}
	for _, s := range skip {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00") {
			return nil, fmt.Errorf("skip name %q must be one path component", s)
		}
		f.skip[s] = true
	}
	for _, e := range exclude {
		if err := validRel(e); err != nil {
			return nil, fmt.Errorf("nested mount %q: %w", e, err)
		}
		f.exclude[e] = true
		for d := path.Dir(e); d != "."; d = path.Dir(d) {
			f.ancestors[d] = true
		}
	}
	return f, nil
}

// name reports whether a directory entry called name is left out wherever it is.
func (f *filter) name(name string) bool {
	return f.skip[name] || strings.HasPrefix(name, stagingPrefix)
}

// check is what a receiver demands of every path the other side sends: valid, no skipped or
// wsync-owned component, not in a nested tree nor one of the directories leading to it.
func (f *filter) check(rel string) error {
	if err := validRel(rel); err != nil {
		return err
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		if f.name(c) {
			return fmt.Errorf("path %.200q has a component %q that is never synced", rel, c)
		}
		if f.exclude[strings.Join(parts[:i+1], "/")] {
			return fmt.Errorf("path %.200q lies in a nested mount", rel)
		}
	}
	if f.ancestors[rel] {
		return fmt.Errorf("path %.200q leads to a nested mount", rel)
	}
	return nil
}

// underAny reports whether rel is one of prefixes or lies beneath one.
func underAny(rel string, prefixes []string) bool {
	for _, p := range prefixes {
		if p == "" || rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

const dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openDir opens the directory rel (clean, relative; "" = base) beneath the directory base,
// one component at a time with O_NOFOLLOW, so no symlink is followed and nothing outside
// base is reached whatever is renamed meanwhile. create makes missing components (0755).
// The result is an O_PATH handle (enough for every *at call).
func openDir(base int, rel string, create bool) (int, error) {
	cur, err := unix.Openat(base, ".", dirFlags, 0)
	if err != nil {
		return -1, err
	}
	if rel == "" || rel == "." {
		return cur, nil
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			unix.Close(cur)
			return -1, unix.EINVAL
		}
		next, err := unix.Openat(cur, c, dirFlags, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(cur, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(cur, c, dirFlags, 0)
			}
		}
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

// lstatAt describes name in dir without following it; exists is false for ENOENT.
func lstatAt(dir int, name string) (st unix.Stat_t, exists bool, err error) {
	err = unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

func kindOf(st *unix.Stat_t) (Kind, bool) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return KindFile, true
	case unix.S_IFDIR:
		return KindDir, true
	case unix.S_IFLNK:
		return KindSymlink, true
	}
	return "", false
}

func kindName(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return "not a regular file, directory or symlink"
}

func readlinkAt(dir int, name string) (string, error) {
	buf := make([]byte, maxLinkBytes+1)
	n, err := unix.Readlinkat(dir, name, buf)
	if err != nil {
		return "", err
	}
	if n > maxLinkBytes {
		return "", fmt.Errorf("symlink target longer than %d bytes", maxLinkBytes)
	}
	return string(buf[:n]), nil
}

// errNotSame: the file at a name is not the one looked at (swapped, or not regular).
var errNotSame = errors.New("changed while it was read (swapped, or not a regular file)")

// openRegular opens name in dir for reading only if it is the regular file want describes
// (same device and inode): O_NOFOLLOW|O_NONBLOCK, so a symlink or a FIFO swapped in since
// the lstat is neither followed nor able to block the open.
func openRegular(dir int, name string, want *unix.Stat_t) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, st, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (want != nil && (st.Dev != want.Dev || st.Ino != want.Ino)) {
		unix.Close(fd)
		return nil, st, errNotSame
	}
	return os.NewFile(uintptr(fd), name), st, nil
}

// hashRegular hashes name in dir (the regular file looked at as want) and returns its hash
// and the stat key that hash is valid for; stable is false when the file changed while it
// was read (then the hash must not be cached).
func hashRegular(dir int, name string, want *unix.Stat_t) (hash string, key statKey, stable bool, err error) {
	f, st, err := openRegular(dir, name, want)
	if err != nil {
		return "", key, false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", key, false, err
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil {
		return "", key, false, err
	}
	key = keyOf(&st)
	return hex.EncodeToString(h.Sum(nil)), key, keyOf(&after) == key && (want == nil || keyOf(want) == key), nil
}

// timeStamp renders Unix seconds as the UTC time in conflict names.
func timeStamp(unixSec int64) string {
	return time.Unix(unixSec, 0).UTC().Format("20060102T150405Z")
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return stagingPrefix + hex.EncodeToString(b[:])
}

// dirCache keeps the parent directories a commit works in open (bounded).
type dirCache struct {
	root int
	fds  map[string]int
}

const dirCacheMax = 64

func (c *dirCache) get(rel string, create bool) (int, error) {
	if rel == "." {
		rel = ""
	}
	if fd, ok := c.fds[rel]; ok {
		return fd, nil
	}
	if len(c.fds) >= dirCacheMax {
		c.close()
	}
	fd, err := openDir(c.root, rel, create)
	if err != nil {
		return -1, err
	}
	if c.fds == nil {
		c.fds = map[string]int{}
	}
	c.fds[rel] = fd
	return fd, nil
}

// forget drops rel and everything beneath it (it was removed or replaced).
func (c *dirCache) forget(rel string) {
	for k, fd := range c.fds {
		if k == rel || strings.HasPrefix(k, rel+"/") {
			unix.Close(fd)
			delete(c.fds, k)
		}
	}
}

func (c *dirCache) close() {
	for k, fd := range c.fds {
		unix.Close(fd)
		delete(c.fds, k)
	}
}

// fsyncDir flushes a directory given by an O_PATH handle.
func fsyncDir(pathFD int) error {
	fd, err := unix.Openat(pathFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

func splitRel(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}
