package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append(args[:1:1], append([]string{"--chart", "../../charts/langbot"}, args[1:]...)...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"render defaults", []string{"render"}, 0, []string{"kind: Deployment", "name: BOX__ENABLED"}, nil},
		{"validate box docker", []string{"validate", "-f", "../../charts/langbot/ci/box-docker-values.yaml"}, 0, []string{"valid:", "Deployment/langbot-box", "privileged"}, nil},
		{"validate lists every problem", []string{"validate", "--set", "box.hostRoot=rel", "--set", "langbot.image.tag=latest"}, 1,
			[]string{"box.hostRoot", "langbot.image.tag", "invalid:"}, nil},
		{"validate cross-field rule", []string{"validate", "--set", "box.enabled=true", "--set", "box.allowedMountRoots={/srv}"}, 1,
			[]string{"box.allowedMountRoots"}, nil},
		{"validate lists schema and template problems together", []string{"validate", "--set", "box.enabled=true", "--set", "box.allowedMountRoots={/srv}", "--set", "box.image.tag=latest"}, 1,
			[]string{"invalid: 2 problem(s)", "box.image.tag: `latest` is refused", "is not inside box.allowedMountRoots"}, nil},
		{"render refuses bad values", []string{"render", "--set", "box.backend=podman"}, 1, nil, []string{"box.backend"}},
		{"explain pools", []string{"explain", "-f", "../../charts/langbot/ci/node-pools-values.yaml", "--nodes", "testdata/nodes-two-pools.yaml"}, 0,
			[]string{"schedulable on: box-1", "schedulable on: general-1", "Pod Security"}, nil},
		{"explain predicts Pending", []string{"explain", "-f", "../../charts/langbot/ci/node-pools-values.yaml", "--nodes", "testdata/nodes-no-box-pool.yaml"}, 3,
			[]string{"PENDING: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"}, nil},
		{"bad flag", []string{"validate", "--output", "yaml"}, 2, nil, []string{"--output must be text or json"}},
		{"unknown command", []string{"deploy"}, 2, nil, []string{"unknown command"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			assert.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", out, errOut)
			for _, s := range tc.stdout {
				assert.Contains(t, out, s)
			}
			for _, s := range tc.stderr {
				assert.Contains(t, errOut, s)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	code, out, _ := runCLI("validate", "--output", "json", "--set", "box.enabled=true", "--set", "box.docker.socketPath=relative")
	assert.Equal(t, 1, code)
	var doc struct {
		OK       bool     `json:"ok"`
		Problems []string `json:"problems"`
		Schema   []struct {
			Field string `json:"field"`
		} `json:"schema"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	assert.False(t, doc.OK)
	require.NotEmpty(t, doc.Schema)
	assert.Equal(t, "box.docker.socketPath", doc.Schema[0].Field)

	code, out, _ = runCLI("explain", "--output", "json", "-f", "../../charts/langbot/ci/box-docker-values.yaml")
	assert.Equal(t, 0, code)
	var ex struct {
		Components []struct {
			Component     string `json:"component"`
			CoLocatedWith string `json:"coLocatedWith"`
			PodSecurity   string `json:"podSecurity"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ex), out)
	found := false
	for _, c := range ex.Components {
		if c.Component == "box" {
			found = true
			assert.Equal(t, "langbot", c.CoLocatedWith)
			assert.Equal(t, "privileged", c.PodSecurity)
		}
	}
	assert.True(t, found)
}
