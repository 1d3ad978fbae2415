// Command langbot is the offline stand-in for the LangBot image (LangBot 4.10.8,
// `uv run --no-sync main.py` in rockchin/langbot) in end-to-end tests. It reads the settings the
// chart gives LangBot the way LangBot reads them (env overrides of data/config.yaml,
// pkg/core/stages/load_config.py), answers on the web port exactly what LangBot answers on
// the paths the chart and its users touch, and does at start what LangBot does with those
// settings:
//
//   - database.use=postgresql: connects with the URL or host/port/user/password/database the
//     chart set and proves it by creating a table, inserting a row and reading it back; a
//     failure stops the process before the web port opens, as LangBot's start-up does
//     (pkg/core/stages/build_app.py initialises persistence before the HTTP controller);
//   - plugin.enable: dials plugin.runtime_ws_url with the control token header and pings;
//   - box.enabled: dials the Box at box.runtime.endpoint + /rpc/ws, sends box_init, runs `cat`
//     on a file of its tenant workspace in a sandbox and runs a skill from its read-only mount.
//
// Outcomes go to the log (one "stand-in outcome" line per change) and to
// <data root>/standin-outcome.json, which the end-to-end suite reads from the node; nothing
// of it is served over HTTP, because LangBot has no such endpoint. Paths cited are under
// src/langbot/ of LangBot at tag v4.10.8.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/test/standins/internal/standin"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("LangBot stand-in failed to start", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	target, err := standin.UVRun(os.Args[1:])
	if err != nil {
		return err
	}
	// main.py (langbot/__main__.py): --standalone-runtime and --debug; the chart passes none.
	if target[0] != "main.py" || len(target) > 1 {
		return fmt.Errorf("this is the LangBot stand-in: it runs `main.py` without options, got %q", target)
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	out := newOutcome(log, filepath.Join(dataRoot(), "standin-outcome.json"))

	// pkg/core/stages/build_app.py: persistence first; an error ends the start-up.
	db, err := proveDatabase(ctx, cfg.database)
	out.set(func(o *outcomeData) { o.Database = db })
	if err != nil {
		return fmt.Errorf("database %s: %w", cfg.database.use, err)
	}
	if cfg.pluginEnable {
		go connectPluginRuntime(ctx, log, cfg, out)
	} else {
		// pkg/plugin/connector.py initialize: "Plugin system is disabled."
		out.set(func(o *outcomeData) { o.PluginRuntime = map[string]any{"state": "disabled"} })
	}
	switch {
	case !cfg.boxEnabled:
		out.set(func(o *outcomeData) { o.Box.State = "disabled" })
	case cfg.boxBackend == "e2b":
		// The e2b backend runs sandboxes remotely; the stand-in has no e2b account to use.
		out.set(func(o *outcomeData) { o.Box.State = "e2b (not exercised)" })
	default:
		out.set(func(o *outcomeData) { o.Box.State = "pending" })
		go exerciseBox(ctx, log, cfg, out)
	}

	// main.py HTTPController.run: Hypercorn on 0.0.0.0:api.port.
	return standin.Serve(ctx, log, net.JoinHostPort(standin.BindHost(), strconv.Itoa(cfg.apiPort)), webHandler())
}

// dataRoot follows pkg/utils/paths.py get_data_root for the installed image: LANGBOT_DATA_ROOT,
// else <working directory>/data (/app/data in the image).
func dataRoot() string {
	if r := strings.TrimSpace(os.Getenv("LANGBOT_DATA_ROOT")); r != "" {
		return r
	}
	wd, err := os.Getwd()
	if err != nil {
		return "data"
	}
	return filepath.Join(wd, "data")
}

// config is the part of data/config.yaml (templates/config.yaml defaults) the stand-in reads,
// after the environment overrides of load_config.py _apply_env_overrides_to_config.
type config struct {
	apiPort      int
	pluginEnable bool
	runtimeWSURL string
	runtimeToken string
	boxEnabled   bool
	boxBackend   string
	boxEndpoint  string
	boxToken     string
	database     dbConfig
}

func loadConfig() (config, error) {
	c := config{
		apiPort:      5300,
		pluginEnable: envBool("PLUGIN__ENABLE", true),
		runtimeWSURL: envString("PLUGIN__RUNTIME_WS_URL", "ws://langbot_plugin_runtime:5400/control/ws"),
		// pkg/plugin/connector.py and pkg/box/connector.py read the tokens from these variables.
		runtimeToken: strings.TrimSpace(os.Getenv("LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN")),
		boxEnabled:   envBool("BOX__ENABLED", true),
		boxBackend:   envString("BOX__BACKEND", "local"),
		boxEndpoint:  envString("BOX__RUNTIME__ENDPOINT", ""),
		boxToken:     strings.TrimSpace(os.Getenv("LANGBOT_BOX_CONTROL_TOKEN")),
	}
	var err error
	// api.port: an int in the template, so the override is converted (convert_value); a value
	// that is not an int stays a string and the HTTP server cannot bind it.
	if c.apiPort, err = standin.BoundedInt("API__PORT", 5300, 1, 65535); err != nil {
		return c, err
	}
	// system.blocking_executor.* (utils/bounded_executor.py, the runtime's limits).
	if err := standin.BlockingExecutorLimits("SYSTEM__BLOCKING_EXECUTOR__"); err != nil {
		return c, err
	}
	c.database, err = loadDBConfig()
	return c, err
}

// envBool is load_config.py convert_value for a boolean default: true, 1, yes, on (any case).
func envBool(name string, def bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

func envString(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
