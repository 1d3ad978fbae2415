//go:build integration

package conformance

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent/agenttest"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube/kubetest"
)

// TestMain builds boxagent and names it in BOXD_EXEC_AGENT_BINARY, where boxd (in-process
// here, or the binary TestStdioControl builds) finds it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "boxagent-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create a directory for boxagent:", err)
		os.Exit(1)
	}
	bin, err := agenttest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	os.Setenv(docker.AgentBinaryEnv, bin)
	var env *kubetest.Env
	if onKube() {
		var cfg string
		if env, cfg, err = kubeUp(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if env != nil {
				_ = env.Down(context.Background())
			}
			os.RemoveAll(dir)
			os.Exit(1)
		}
		os.Setenv(kubeConfigEnv, cfg)
		os.Setenv(kubeNamespaceEnv, env.Namespace)
	}
	code := m.Run()
	if env != nil {
		if err := env.Down(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// execPath is one way box_exec reaches a sandbox; the exec suites run on both, and observe
// the same results.
type execPath struct {
	name  string
	agent bool
}

// execPaths are the exec paths of the backend under test: on the kubernetes backend every
// command goes through the agent, so its suites run once.
func execPaths() []execPath {
	if onKube() {
		return []execPath{{"exec agent", true}}
	}
	return []execPath{{"docker exec", false}, {"exec agent", true}}
}

// boxInit adds the path's `docker` section to a box_init payload.
func (p execPath) boxInit(extra map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range extra {
		out[k] = v
	}
	out["docker"] = map[string]any{"exec_agent": p.agent}
	return out
}

// ExecAgentEnv, set to 1, runs every test that does not choose an exec path itself with the
// exec agent on (ci/30-boxd.sh runs the suite once more that way).
const ExecAgentEnv = "BOXD_TEST_EXEC_AGENT"

// defaultExecPath turns the exec agent on in a box_init payload without a `docker` section
// when ExecAgentEnv is 1.
func defaultExecPath(cfg map[string]any) {
	if _, set := cfg["docker"]; !set && os.Getenv(ExecAgentEnv) == "1" {
		cfg["docker"] = map[string]any{"exec_agent": true}
	}
}

// parentCmdline is a command printing its parent's command line.
const parentCmdline = `tr '\0' ' ' < /proc/$PPID/cmdline`

// assertRanThrough checks a parentCmdline result: the agent, or the docker exec path's wrapper.
func (p execPath) assertRanThrough(t *testing.T, stdout any) {
	t.Helper()
	s, _ := stdout.(string)
	if p.agent {
		if onKube() { // the agent daemon, with its arguments
			assert.True(t, strings.HasPrefix(s, kube.AgentPath+" "), "the command ran under the exec agent: %q", s)
			return
		}
		assert.Equal(t, docker.AgentPath, s, "the command ran under the exec agent")
		return
	}
	assert.True(t, strings.HasPrefix(s, "sh -c "), "the command ran under the docker exec wrapper: %q", s)
}
