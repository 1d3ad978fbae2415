// Package probe implements box_verify_shared_workspace (§10.5): LangBot writes a probe file in
// its view of the default workspace and the runtime proves it sees the same bytes. The file is
// opened relative to the workspace directory without following symlinks.
package probe

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

var markerPattern = regexp.MustCompile(`^\.langbot-box-volume-probe-[a-f0-9]{32}$`)

const maxProbe = 1024

func fail(msg string) error { return rpc.Errorf(rpc.BoxReadinessError, "%s", msg) }

// WorkspaceRoot is the managed workspace check of §10.5 step 2, shared with grant-enforced
// readiness (§7.5.3 workspace_mount): the default workspace must be configured, lie under an
// allowed mount root, be a directory and be readable, writable and searchable. Errors are
// BoxReadinessError.
func WorkspaceRoot(paths config.Paths) (string, error) {
	root := paths.DefaultWorkspace
	if root == "" {
		return "", fail("Managed sandbox admission requires box.local.default_workspace")
	}
	inside := false
	for _, r := range paths.AllowedMountRoots {
		inside = inside || mounts.Within(root, r)
	}
	if !inside {
		return "", fail("Managed sandbox workspace is outside box.local.allowed_mount_roots")
	}
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fail("Managed sandbox workspace path is not a directory")
	}
	if unix.Access(root, unix.R_OK|unix.W_OK|unix.X_OK) != nil {
		return "", fail("Managed sandbox workspace path is not writable")
	}
	return root, nil
}

// Verify reads the marker in the default workspace of paths and returns its digest and size.
func Verify(paths config.Paths, marker string) (map[string]any, error) {
	marker = strings.TrimSpace(marker)
	if !markerPattern.MatchString(marker) {
		return nil, fail("Invalid Box shared Workspace probe basename")
	}
	root, err := WorkspaceRoot(paths)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fail("Box Runtime cannot read the Core shared Workspace probe")
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat(dirfd, marker, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fail("Box Runtime cannot read the Core shared Workspace probe")
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fail("Box Runtime cannot read the Core shared Workspace probe")
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fail("Box shared Workspace probe is not a regular file")
	}
	if st.Size < 1 || st.Size > maxProbe {
		return nil, fail("Box shared Workspace probe has an invalid size")
	}
	buf := make([]byte, maxProbe+1)
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if k > 0 {
			n += k
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fail("Box Runtime cannot read the Core shared Workspace probe")
		}
		if k == 0 {
			break
		}
	}
	if n > maxProbe {
		return nil, fail("Box shared Workspace probe exceeds the size limit")
	}
	if int64(n) != st.Size {
		return nil, fail("Box shared Workspace probe changed while being verified")
	}
	sum := sha256.Sum256(buf[:n])
	return map[string]any{"marker_name": marker, "sha256": hex.EncodeToString(sum[:]), "size": n}, nil
}
