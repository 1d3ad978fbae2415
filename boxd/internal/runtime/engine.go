package runtime

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/metrics"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
)

// engineWatcher is a backend that notices its engine going away and coming back, and runs
// recovery again then (docker.Backend.WatchEngine).
type engineWatcher interface {
	WatchEngine(ctx context.Context, up bool, known func(name string) bool, done docker.Recovered)
}

// watchEngine runs recovery again each time the backend's engine comes back (issue #10
// item 9: persistent sandboxes of an instance that died while the engine was down are
// removed then, not at boxd's next start), until ctx ends. up says whether start-up recovery
// ran (the engine answered): then the first recovery waits for the engine to go and come back;
// otherwise it runs as soon as the engine answers.
func watchEngine(ctx context.Context, be backend.Backend, up bool, mgr *session.Manager, met *metrics.Metrics, log *slog.Logger) {
	w, ok := be.(engineWatcher)
	if !ok {
		return
	}
	w.WatchEngine(ctx, up, mgr.Known, func(ctx context.Context, adopted []backend.Adopted, removed int, err error) {
		if err != nil {
			log.Warn("LangBot Box orphan container cleanup failed: " + err.Error())
		}
		mgr.AdoptRecovered(ctx, adopted)
		met.OrphansRemoved(removed)
		log.Info(fmt.Sprintf("LangBot Box recovery after the engine came back: %d persistent sandbox(es) found for re-adoption, %d orphaned container(s) removed", len(adopted), removed))
	})
}
