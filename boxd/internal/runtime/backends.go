package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
)

// shareBoxRoot sets the process umask for the kubernetes backend before anything is created
// in the box root: boxd runs as a non-root uid there and shares the root with LangBot and the
// sandboxes (root without CAP_DAC_OVERRIDE) through its group, so what it creates is
// group-writable (internal/perm). The Docker backend keeps the container's umask.
func shareBoxRoot(cfg config.Config, log *slog.Logger) {
	if cfg.Backend != kube.Name {
		return
	}
	old := unix.Umask(perm.SharedUmask)
	log.Info(fmt.Sprintf("LangBot Box kubernetes backend: umask %03o (was %03o): the box root is shared with LangBot and the sandboxes through group %d", perm.SharedUmask, old, os.Getgid()))
}

// newBackend builds the backend named by the start-up configuration (LANGBOT_BOX_CONFIG's
// `backend`): `kubernetes` runs sandboxes as Pods (its `kubernetes` block is read here, once),
// anything else the Docker Engine backend that newDocker builds. cgroupV2 is nil when the
// backend cannot tell. current returns the live configuration (box_init changes the mount
// policy).
func newBackend(cfg config.Config, instanceID, scope, nodeName string, log *slog.Logger, current func() config.Config,
	newDocker func() (*docker.Backend, error)) (be backend.Backend, cgroupV2 func(context.Context) (bool, error), err error) {
	if cfg.Backend == kube.Name {
		set, err := kube.ParseSettings(cfg.Raw["kubernetes"], cfg.Paths.HostRoot)
		if err != nil {
			return nil, nil, fmt.Errorf("LANGBOT_BOX_CONFIG: %w", err)
		}
		kube.RouteKlog(log)
		kb, err := kube.New(kube.Options{InstanceID: instanceID, Scope: scope, NodeName: nodeName, Settings: set, Logger: log,
			AllowedMountRoots: func() []string { return current().Paths.AllowedMountRoots },
			HostRoot:          func() string { return current().Paths.HostRoot }})
		if err != nil {
			return nil, nil, err
		}
		return kb, nil, nil
	}
	db, err := newDocker()
	if err != nil {
		return nil, nil, err
	}
	return db, db.CgroupV2, nil
}
