// Package standin holds what both stand-ins share: the `uv run` command line the real image is
// started with, the bind address, and bounded integer settings read from the environment.
package standin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// UVRun checks that args (os.Args[1:] of a binary installed as `uv`) are `run --no-sync
// TARGET...` and returns TARGET...: the rockchin/langbot image starts every program through uv
// (Dockerfile: CMD ["uv", "run", "--no-sync", "main.py"]; docker/docker-compose.yaml and the
// chart: `uv run --no-sync -m langbot_plugin.cli.__init__ rt|box`), so the stand-in images ship
// their binary as /usr/local/bin/uv and the chart's own command runs them unchanged.
func UVRun(args []string) ([]string, error) {
	if len(args) < 1 || args[0] != "run" {
		return nil, fmt.Errorf("usage: uv run [--no-sync] TARGET... (got %q): the stand-in image runs only what the real image's uv runs", args)
	}
	rest := args[1:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") && rest[0] != "-m" {
		if rest[0] != "--no-sync" {
			return nil, fmt.Errorf("uv run: option %q is not one the chart or the image uses (only --no-sync)", rest[0])
		}
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return nil, fmt.Errorf("uv run: no target")
	}
	return rest, nil
}

// BindHost is where a stand-in listens. Both real programs bind 0.0.0.0 (LangBot:
// pkg/api/http/controller/main.py run(); the plugin runtime: runtime/app.py control_host and
// WebSocketServerController's default host). STANDIN_BIND_HOST exists only so a test on this
// machine can give each stand-in its own loopback address (127.x.y.z), as a pod has its own IP.
func BindHost() string {
	if h := os.Getenv("STANDIN_BIND_HOST"); h != "" {
		return h
	}
	return "0.0.0.0"
}

// BoundedInt reads an integer setting from env var name (def when unset) and refuses anything
// outside [min, max], naming the variable: both programs refuse such settings at start-up.
func BoundedInt(name string, def, min, max int) (int, error) {
	raw, ok := os.LookupEnv(name)
	if !ok {
		return def, nil
	}
	v, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, fmt.Errorf("%s=%q must be an integer", name, raw)
	}
	if v < min || v > max {
		return 0, fmt.Errorf("%s=%d must be between %d and %d", name, v, min, max)
	}
	return v, nil
}

// BlockingExecutorLimits validates the blocking executor settings <prefix>MAX_WORKERS,
// MAX_PENDING and MAX_INFLIGHT_PER_SCOPE as both programs do at start-up
// (langbot_plugin/runtime/bounded_executor.py _validated_limits; LangBot's
// system.blocking_executor uses the same limits).
func BlockingExecutorLimits(prefix string) error {
	workers, err := BoundedInt(prefix+"MAX_WORKERS", 8, 1, 64)
	if err != nil {
		return err
	}
	if _, err := BoundedInt(prefix+"MAX_PENDING", 128, 0, 4096); err != nil {
		return err
	}
	fair := max(1, workers/2)
	scope, err := BoundedInt(prefix+"MAX_INFLIGHT_PER_SCOPE", min(4, fair), 1, 4096)
	if err != nil {
		return err
	}
	if scope > fair {
		return fmt.Errorf("%sMAX_INFLIGHT_PER_SCOPE=%d must not exceed half of %sMAX_WORKERS (%d)", prefix, scope, prefix, fair)
	}
	return nil
}

// Serve listens on addr and serves h until ctx ends.
func Serve(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("listening", "addr", addr)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}
