package bench

import "github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"

func nsOf(instance, workspace string) string {
	return tenancy.Namespace(instance, workspace)[len("ws-"):]
}
