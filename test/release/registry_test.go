//go:build release

// Package release tests what a release ships against a real OCI registry (hack/registry.sh:
// Debian's docker-registry with TLS and htpasswd on loopback): the multi-arch boxd image index
// and the signed chart pushed as an OCI artifact, with both Helm majors. Run by ci/25-release.sh.
package release

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/ociimage"
)

// startRegistry runs hack/registry.sh up (idempotent) and returns how to reach the registry.
func startRegistry(t *testing.T, ctx context.Context, repo string) ociimage.Registry {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "-c", `bash hack/registry.sh up >&2 && eval "$(bash hack/registry.sh env)" &&
		printf '%s\n' "$LBK_REGISTRY" "$LBK_REGISTRY_USER" "$LBK_REGISTRY_PASSWORD" "$LBK_REGISTRY_CA"`)
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err, "hack/registry.sh up")
	f := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, f, 4, "hack/registry.sh env: %q", out)
	return ociimage.Registry{Host: f[0], Username: f[1], Password: f[2], CAFile: f[3]}
}

// tool is the path of a pinned tool built by hack/tools.sh (helm, helm4).
func tool(t *testing.T, ctx context.Context, repo, name string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "hack/tools.sh", name)
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err, "hack/tools.sh %s", name)
	return strings.TrimSpace(string(out))
}
