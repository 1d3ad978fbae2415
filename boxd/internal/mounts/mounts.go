// Package mounts validates host paths before they are bind-mounted into a sandbox (§10.1,
// §10.2). boxd goes beyond the reference: every mount (extra_mounts included) is checked, `/`
// itself is refused, and, when allowed roots are configured, each must lie inside one.
package mounts

import (
	"path/filepath"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// Blocked are the host paths (and everything under them) never mounted (§10.1).
var Blocked = []string{"/etc", "/proc", "/sys", "/dev", "/root", "/boot", "/run", "/var/run", "/run/docker.sock", "/var/run/docker.sock"}

// Resolve is a non-strict realpath: symlinks of the longest existing prefix are followed.
func Resolve(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir, base := filepath.Split(p)
	if dir == "" || filepath.Clean(dir) == p {
		return p
	}
	return filepath.Join(Resolve(filepath.Clean(dir)), base)
}

func within(p, root string) bool {
	return p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/")
}

func blocked(resolved string) bool {
	for _, b := range Blocked {
		if within(resolved, b) {
			return true
		}
	}
	return false
}

// CheckBlocked implements §10.1 for the workspace host_path, with the reference's message.
func CheckBlocked(hostPath string) error {
	r := Resolve(hostPath)
	if blocked(r) || r == "/" {
		return &backend.ValidationError{Message: "host_path " + hostPath + " is blocked for security"}
	}
	return nil
}

// Validate checks every mount: not blocked, not `/`, and inside allowedRoots when given.
func Validate(ms []backend.Mount, allowedRoots []string) error {
	var roots []string
	for _, r := range allowedRoots {
		roots = append(roots, Resolve(r))
	}
	for _, m := range ms {
		r := Resolve(m.HostPath)
		if blocked(r) || r == "/" {
			return &backend.ValidationError{Message: "host_path " + m.HostPath + " is blocked for security"}
		}
		if len(roots) == 0 {
			continue
		}
		ok := false
		for _, root := range roots {
			if within(r, root) {
				ok = true
				break
			}
		}
		if !ok {
			return &backend.ValidationError{Message: "host_path " + m.HostPath + " is outside allowed_mount_roots: " + strings.Join(allowedRoots, ", ")}
		}
	}
	return nil
}
