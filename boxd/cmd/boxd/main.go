// Command boxd is a Go LangBot Box runtime, protocol-compatible with `lbp box` of
// langbot-plugin 0.5.5: sandboxes through the Docker Engine API, one listener for /healthz,
// /readyz, /rpc/ws and the managed-process relays.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/server"
)

func main() {
	// The kubernetes backend's init container: copy boxagent into the sandbox Pod's agent volume.
	if len(os.Args) == 3 && os.Args[1] == kube.InstallAgentCommand {
		if err := kube.InstallAgent(docker.DefaultAgentBinary(), os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "boxd install-agent:", err)
			os.Exit(1)
		}
		return
	}
	fs := flag.NewFlagSet("boxd", flag.ExitOnError)
	host := fs.String("host", "0.0.0.0", "bind address of the listener")
	port := fs.Int("ws-control-port", 5410, "port of the single listener")
	var stdio bool
	fs.BoolVar(&stdio, "s", false, "control channel over stdin/stdout (needs LANGBOT_BOX_TRUSTED_INSTANCE_UUID)")
	fs.BoolVar(&stdio, "stdio-control", false, "same as -s")
	logFormat := fs.String("log-format", "text", "text or json (logs go to stderr)")
	auditLog := fs.String("audit-log", "", "append the JSON-lines audit log to this file (0600); default: stdout, or stderr with -s")
	def := server.DefaultConnLimits()
	conn := server.ConnLimits{}
	fs.IntVar(&conn.MaxConnections, "max-connections", def.MaxConnections, "WebSocket connections (/rpc/ws and relays) served at once; one more gets HTTP 503")
	fs.DurationVar(&conn.MessageTimeout, "ws-message-timeout", def.MessageTimeout, "time an inbound WebSocket message may take from its first frame to its last")
	fs.DurationVar(&conn.WriteTimeout, "ws-write-timeout", def.WriteTimeout, "time one outbound WebSocket message may take to be written")
	fs.IntVar(&conn.MaxOutboundBytes, "ws-max-outbound-bytes", def.MaxOutboundBytes, "bytes of responses queued for one /rpc/ws connection before it is closed")
	fs.IntVar(&conn.MaxInboundBytes, "ws-max-inbound-bytes", def.MaxInboundBytes, "bytes held by unfinished inbound WebSocket messages of all connections together; the connection that would pass it is closed")
	_ = fs.Parse(os.Args[1:])
	if err := conn.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "boxd:", err)
		os.Exit(2)
	}

	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runtime.Run(ctx, runtime.Options{
		Host: *host, Port: *port, Stdio: stdio,
		Token:           os.Getenv("LANGBOT_BOX_CONTROL_TOKEN"),
		TrustedInstance: os.Getenv("LANGBOT_BOX_TRUSTED_INSTANCE_UUID"),
		ConfigJSON:      os.Getenv("LANGBOT_BOX_CONFIG"),
		Scope:           os.Getenv("BOXD_SCOPE"),
		NodeName:        os.Getenv("BOXD_NODE_NAME"),
		Stdin:           os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Logger: log,
		AuditLog:                *auditLog,
		Conn:                    conn,
		UnsafeSoftStorageLimits: admission.UnsafeSoftStorageLimitsEnabled(os.Getenv("LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS")),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "boxd:", err)
		os.Exit(1)
	}
}
