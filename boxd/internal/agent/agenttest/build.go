// Package agenttest builds the boxagent binary for integration tests, the way hack/image.sh
// builds it for the image: static (CGO_ENABLED=0), stripped.
package agenttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Package is the import path of the agent's main package.
const Package = "github.com/langbot-k8s/langbot-k8s/boxd/cmd/boxagent"

// Build compiles boxagent into dir and returns its path.
func Build(dir string) (string, error) {
	out := filepath.Join(dir, "boxagent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, Package)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", Package, err, msg)
	}
	return out, nil
}
