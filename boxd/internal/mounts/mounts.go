// Package mounts validates host paths before they are bind-mounted into a sandbox (§10.1,
// §10.2), and makes sure the directory validated is the directory the sandbox gets. boxd goes
// beyond the reference, which checks only the workspace host_path against a block list:
//   - every mount is checked, extra_mounts included;
//   - `/` itself is refused, and so is any directory that contains a blocked path (mounting
//     /var would expose /var/run/docker.sock), the container engine's socket (DOCKER_HOST) or
//     any directory containing it;
//   - a mount needs allowed roots (box.local.allowed_mount_roots, default [host_root]): with
//     none configured (a boxd that got no box_init) nothing is mounted, and every mount must
//     lie inside one of them. What LangBot legitimately sends passes: the tenant workspace
//     <default_workspace>/tenants/<NS> (or <default_workspace> itself) and skill packages
//     under <skills_root>/tenants/<NS>/..., all under host_root;
//   - host_root itself, or any directory containing <host_root>/.boxd (where the exec agent
//     is installed), is never mounted read-write;
//   - symlinks are resolved (non-strict realpath) before every test. The resolved path is then
//     opened component by component from `/` without following any symlink (Prepare), missing
//     workspace directories are created with mkdirat relative to those handles, and the
//     (device, inode) of every source is remembered. A component swapped for a symlink after
//     the check makes the walk fail; one swapped after the walk, before the engine mounts the
//     path, is caught by Verify, which the backend runs inside the started sandbox before the
//     session is used: the mount target must have the validated device and inode.
package mounts

import (
	"errors"
	"fmt"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// Blocked are the host paths (and everything under them) never mounted (§10.1).
var Blocked = []string{"/etc", "/proc", "/sys", "/dev", "/root", "/boot", "/run", "/var/run", "/run/docker.sock", "/var/run/docker.sock"}

// OwnDir is boxd's own directory under host_root (the exec agent lives there).
const OwnDir = ".boxd"

// Resolve is a non-strict realpath (like Python's os.path.realpath): the path is cleaned and
// every symlink on it is followed, dangling ones included (their target is resolved in
// turn); components that do not exist are appended as they are.
func Resolve(p string) string {
	return resolve(filepath.Clean(p), 0)
}

// maxLinks bounds symlink chains (Linux's own limit is 40).
const maxLinks = 40

func resolve(p string, depth int) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir, base := filepath.Split(p)
	if dir == "" || filepath.Clean(dir) == p {
		return p
	}
	parent := resolve(filepath.Clean(dir), depth)
	joined := filepath.Join(parent, base)
	if target, err := os.Readlink(joined); err == nil && depth < maxLinks {
		if !filepath.IsAbs(target) {
			target = filepath.Join(parent, target)
		}
		return resolve(filepath.Clean(target), depth+1)
	}
	return joined
}

// Within reports whether p equals root or lies under it (both already resolved).
func Within(p, root string) bool {
	return p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/")
}

// Policy is what every mount is checked against.
type Policy struct {
	// Roots are the allowed mount roots as configured (resolved here). None: no mounts.
	Roots []string
	// HostRoot is box.local.host_root ("" = unset): <HostRoot>/.boxd is never mounted rw.
	HostRoot string
	// Sockets are the container engine sockets boxd talks to (DOCKER_HOST): never mounted,
	// nor any directory containing them.
	Sockets []string
}

// blocked reports whether resolved may not be mounted at all: `/`, a blocked path, a path
// under one or containing one, or an engine socket or a directory containing it (why then
// names the socket).
func (p Policy) blocked(resolved string) (blocked bool, why string) {
	if resolved == "/" {
		return true, ""
	}
	for _, b := range Blocked {
		for _, form := range []string{b, Resolve(b)} {
			if Within(resolved, form) || Within(form, resolved) {
				return true, ""
			}
		}
	}
	for _, s := range p.Sockets {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		for _, form := range []string{filepath.Clean(s), Resolve(s)} {
			if Within(resolved, form) || Within(form, resolved) {
				return true, " (it contains the container engine socket " + form + ")"
			}
		}
	}
	return false, ""
}

func invalid(format string, args ...any) error {
	return &backend.ValidationError{Message: fmt.Sprintf(format, args...)}
}

// CheckBlocked implements §10.1 (plus `/`, ancestors of blocked paths and the engine's
// socket) for the workspace host_path, whatever its mode, with the reference's message.
func (p Policy) CheckBlocked(hostPath string) error {
	if blocked, why := p.blocked(Resolve(hostPath)); blocked {
		return invalid("host_path %s is blocked for security%s", hostPath, why)
	}
	return nil
}

// Check validates one mount against the policy and returns its resolved host path (what must
// be mounted). A mount is refused when its host path is not absolute, is blocked (see
// CheckBlocked), when no allowed roots are configured or it lies outside all of them, or when
// it is read-write and is, contains or lies in <host_root>/.boxd. Errors are
// *backend.ValidationError, reported as `BoxValidationError: <message>`.
func (p Policy) Check(m backend.Mount) (string, error) {
	if !filepath.IsAbs(m.HostPath) {
		return "", invalid("host_path %s must be an absolute host path", m.HostPath)
	}
	if err := p.CheckBlocked(m.HostPath); err != nil {
		return "", err
	}
	r := Resolve(m.HostPath)
	var roots []string
	for _, root := range p.Roots {
		if strings.TrimSpace(root) != "" {
			roots = append(roots, Resolve(root))
		}
	}
	if len(roots) == 0 {
		return "", invalid("host_path %s: host_path mounting is disabled because no allowed_mount_roots are configured (box_init must set box.local.host_root or box.local.allowed_mount_roots)", m.HostPath)
	}
	if !inAny(r, roots) {
		return "", invalid("host_path %s is outside allowed_mount_roots: %s", m.HostPath, strings.Join(p.Roots, ", "))
	}
	if m.Mode == backend.MountRW && strings.TrimSpace(p.HostRoot) != "" {
		own := filepath.Join(Resolve(p.HostRoot), OwnDir)
		if Within(own, r) || Within(r, own) {
			return "", invalid("host_path %s must not be mounted read-write: it contains boxd's own directory %s (mount a directory below box.local.host_root, or mount it ro)", m.HostPath, own)
		}
	}
	return r, nil
}

func inAny(p string, roots []string) bool {
	for _, root := range roots {
		if Within(p, root) {
			return true
		}
	}
	return false
}

// ID is the identity of a mount source: device and inode.
type ID struct {
	Dev, Ino uint64
}

func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// Want is one mount to prepare. Create: missing directories of its host path are created
// (the workspace; extra mounts must exist).
type Want struct {
	backend.Mount
	Create bool
}

// SpecWants lists the bind mounts of a session spec to prepare: the workspace first (created
// when missing) when it has a host_path whose mode is not none, then every extra mount whose
// mode is not none (a host_path of mode none is still checked with CheckBlocked).
func SpecWants(spec backend.SessionSpec) []Want {
	var ws []Want
	if spec.HostPath != "" && spec.HostPathMode != backend.MountNone {
		ws = append(ws, Want{Mount: backend.Mount{HostPath: spec.HostPath, MountPath: spec.MountPath, Mode: spec.HostPathMode}, Create: true})
	}
	for _, m := range spec.ExtraMounts {
		if m.Mode != backend.MountNone {
			ws = append(ws, Want{Mount: m})
		}
	}
	return ws
}

// Source is a prepared mount: HostPath resolved, the source held open (O_PATH) so its
// identity cannot change under boxd while the sandbox is created.
type Source struct {
	backend.Mount
	ID ID
	fd int
}

// Sources are prepared mounts; Close releases them once the sandbox is verified.
type Sources []Source

// Mounts are the mounts to give the engine (host paths resolved).
func (ss Sources) Mounts() []backend.Mount {
	out := make([]backend.Mount, len(ss))
	for i, s := range ss {
		out[i] = s.Mount
	}
	return out
}

// Targets are the mount targets in the sandbox, in order.
func (ss Sources) Targets() []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.MountPath
	}
	return out
}

// OpenDir opens the prepared source directory for reading through the handle Prepare holds,
// not by its path: it is the directory validated whatever was renamed or swapped since (a
// backend that copies files instead of bind-mounting them, internal/wsync, works in it).
// The caller closes the result; a source that is a regular file is refused.
func (s Source) OpenDir() (*os.File, error) {
	fd, err := unix.Openat(s.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open host_path %s: %w", s.HostPath, err)
	}
	return os.NewFile(uintptr(fd), s.HostPath), nil
}

// Close releases the handles.
func (ss Sources) Close() {
	for _, s := range ss {
		if s.fd > 0 {
			_ = unix.Close(s.fd)
		}
	}
}

// Prepare checks every mount (Check) and opens each resolved source from `/` one component
// at a time with O_PATH|O_NOFOLLOW, so no symlink is followed after the check: a component
// replaced by a symlink (or anything but a directory) in between makes it fail. Missing
// directories of a Want with Create are made with mkdirat in the directory handle just
// opened, i.e. only where the check allowed. The caller must Close the result.
func Prepare(ws []Want, p Policy) (Sources, error) {
	out := make(Sources, 0, len(ws))
	for _, w := range ws {
		r, err := p.Check(w.Mount)
		if err != nil {
			out.Close()
			return nil, err
		}
		fd, id, err := open(w.HostPath, r, w.Create)
		if err != nil {
			out.Close()
			return nil, err
		}
		m := w.Mount
		m.HostPath = r
		out = append(out, Source{Mount: m, ID: id, fd: fd})
	}
	return out, nil
}

// MkdirAll creates the missing directories of resolved (a path Resolve returned, already
// checked by the caller) the way Prepare does: component by component, never through a
// symlink, so a component swapped in meanwhile cannot make it create anything elsewhere.
func MkdirAll(resolved string) error {
	fd, _, err := open(resolved, resolved, true)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// open walks resolved from `/` without following symlinks and returns an O_PATH handle on
// it. Every component but the last must be a directory; the last a directory or a regular
// file. create makes missing directories (perm.Dir, minus the umask) on the way.
func open(hostPath, resolved string, create bool) (int, ID, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, ID{}, fmt.Errorf("open /: %w", err)
	}
	parts := strings.Split(strings.Trim(resolved, "/"), "/")
	for i, c := range parts {
		if c == "" {
			continue
		}
		last := i == len(parts)-1
		next, err := openComponent(fd, c, create)
		if err != nil {
			_ = unix.Close(fd)
			return -1, ID{}, componentErr(hostPath, resolved, parts[:i+1], err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			_ = unix.Close(fd)
			_ = unix.Close(next)
			return -1, ID{}, fmt.Errorf("stat %s: %w", "/"+strings.Join(parts[:i+1], "/"), err)
		}
		kind := st.Mode & unix.S_IFMT
		if kind != unix.S_IFDIR && (!last || kind != unix.S_IFREG) {
			_ = unix.Close(fd)
			_ = unix.Close(next)
			return -1, ID{}, componentErr(hostPath, resolved, parts[:i+1], unix.ENOTDIR)
		}
		_ = unix.Close(fd)
		fd = next
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return -1, ID{}, fmt.Errorf("stat %s: %w", resolved, err)
	}
	return fd, ID{Dev: uint64(st.Dev), Ino: st.Ino}, nil //nolint:unconvert // Dev is not uint64 everywhere
}

// openComponent opens name in dir without following a symlink, making it first (a directory)
// when it is missing and create is set.
func openComponent(dir int, name string, create bool) (int, error) {
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dir, name, flags, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := unix.Mkdirat(dir, name, uint32(perm.Dir)); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create directory: %w", err)
		}
		fd, err = unix.Openat(dir, name, flags, 0)
	}
	return fd, err
}

// componentErr explains why the walk stopped at upTo. The errors a swap causes are
// validation errors (nothing was mounted); others are the backend's.
func componentErr(hostPath, resolved string, upTo []string, err error) error {
	at := "/" + strings.Join(upTo, "/")
	if errors.Is(err, unix.ENOENT) {
		return invalid("host_path %s does not exist on the Box runtime host (%s is missing)", hostPath, at)
	}
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return invalid("host_path %s changed while it was validated: %s is no longer a directory (a symlink was swapped in?); nothing was mounted", hostPath, at)
	}
	return fmt.Errorf("open host_path %s (resolved %s) at %s: %w", hostPath, resolved, at, err)
}

// StatLine formats the identity of path as the agent's `stat` subcommand prints it, one line
// per path: "<dev> <ino>", or "error <text>".
func StatLine(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "error " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	return fmt.Sprintf("%d %d", uint64(st.Dev), st.Ino) //nolint:unconvert // Dev is not uint64 everywhere
}

// Verify compares what the sandbox reports for its mount targets (the output of the agent's
// `stat` subcommand run with ss.Targets()) with the identities validated by Prepare. Any
// difference means a path was swapped between the check and the engine's mount: the caller
// must destroy the sandbox.
func (ss Sources) Verify(out string) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(ss) {
		return invalid("the sandbox's mounts could not be verified: %d mount targets, %d answers (%.200q)", len(ss), len(lines), out)
	}
	for i, s := range ss {
		got, err := parseStat(lines[i])
		if err != nil {
			return invalid("the sandbox's mount %s of host_path %s could not be verified: %v", s.MountPath, s.HostPath, err)
		}
		if got != s.ID {
			return invalid("host_path %s changed while the sandbox was created: the engine mounted %s at %s, boxd validated %s (a path component was swapped); the sandbox was removed", s.HostPath, got, s.MountPath, s.ID)
		}
	}
	return nil
}

func parseStat(line string) (ID, error) {
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return ID{}, errors.New(msg)
	}
	dev, ino, ok := strings.Cut(line, " ")
	d, err1 := strconv.ParseUint(dev, 10, 64)
	n, err2 := strconv.ParseUint(ino, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return ID{}, fmt.Errorf("unexpected answer %.100q", line)
	}
	return ID{Dev: d, Ino: n}, nil
}
