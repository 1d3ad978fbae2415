// Package mounts validates host paths before they are bind-mounted into a sandbox (§10.1,
// §10.2). boxd goes beyond the reference, which checks only the workspace host_path against
// a block list:
//   - every mount is checked, extra_mounts included;
//   - `/` itself is refused, and so is any directory that contains a blocked path (mounting
//     /var would expose /var/run/docker.sock);
//   - symlinks are resolved (non-strict realpath) before every test, and the resolved path is
//     what gets mounted, so a symlink swapped after the check cannot redirect the mount;
//   - when allowed roots are configured (box.local.allowed_mount_roots), every mount must lie
//     inside one of them. What LangBot legitimately sends passes: the tenant workspace
//     <default_workspace>/tenants/<NS> (or <default_workspace> itself) and skill packages
//     under <skills_root>/tenants/<NS>/..., all under host_root, which LangBot's chart puts in
//     allowed_mount_roots.
package mounts

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// Blocked are the host paths (and everything under them) never mounted (§10.1).
var Blocked = []string{"/etc", "/proc", "/sys", "/dev", "/root", "/boot", "/run", "/var/run", "/run/docker.sock", "/var/run/docker.sock"}

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

// blocked reports whether resolved is a blocked path, lies under one, or contains one.
func blocked(resolved string) bool {
	if resolved == "/" {
		return true
	}
	for _, b := range Blocked {
		for _, form := range []string{b, Resolve(b)} {
			if Within(resolved, form) || Within(form, resolved) {
				return true
			}
		}
	}
	return false
}

func blockedError(hostPath string) error {
	return &backend.ValidationError{Message: "host_path " + hostPath + " is blocked for security"}
}

// CheckBlocked implements §10.1 (plus `/` and ancestors of blocked paths) for the workspace
// host_path, whatever its mode, with the reference's message.
func CheckBlocked(hostPath string) error {
	if blocked(Resolve(hostPath)) {
		return blockedError(hostPath)
	}
	return nil
}

// Validate checks every mount and returns them with their host paths resolved (what should
// be mounted). A mount is refused when its host path is not absolute, is blocked, is `/`,
// contains a blocked path, or lies outside every allowed root (when roots are given). Errors
// are *backend.ValidationError, reported as `BoxValidationError: <message>`.
func Validate(ms []backend.Mount, allowedRoots []string) ([]backend.Mount, error) {
	var roots []string
	for _, r := range allowedRoots {
		if strings.TrimSpace(r) != "" {
			roots = append(roots, Resolve(r))
		}
	}
	out := make([]backend.Mount, 0, len(ms))
	for _, m := range ms {
		if !filepath.IsAbs(m.HostPath) {
			return nil, &backend.ValidationError{Message: "host_path " + m.HostPath + " must be an absolute host path"}
		}
		r := Resolve(m.HostPath)
		if blocked(r) {
			return nil, blockedError(m.HostPath)
		}
		if len(roots) > 0 && !inAny(r, roots) {
			return nil, &backend.ValidationError{Message: "host_path " + m.HostPath + " is outside allowed_mount_roots: " + strings.Join(allowedRoots, ", ")}
		}
		m.HostPath = r
		out = append(out, m)
	}
	return out, nil
}

func inAny(p string, roots []string) bool {
	for _, root := range roots {
		if Within(p, root) {
			return true
		}
	}
	return false
}
