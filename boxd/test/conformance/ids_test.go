//go:build integration

package conformance

import "github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"

func physicalID(logical string) string {
	p, _ := tenancy.Context{Instance: instance, Workspace: workspace, Generation: 1}.Physical(logical)
	return p
}
