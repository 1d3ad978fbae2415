// Command boxagent is boxd's in-sandbox exec agent (see internal/agent). boxd bind-mounts it
// read-only into a sandbox and starts it through one Engine API exec, as the container's own
// user, with stdin/stdout attached: it speaks the agent protocol on them and nothing else (no
// network, no arguments, no configuration). It exits when its input ends, killing whatever it
// still runs. Build it static: CGO_ENABLED=0 go build ./boxd/cmd/boxagent.
//
// `boxagent stat PATH...` is its one other use: it prints "<device> <inode>" (or "error
// <text>") for each path, one line each, so that boxd can check, in a sandbox it has just
// started and on any image, that every bind mount is the host directory it validated
// (internal/mounts).
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

func main() {
	// A write to a vanished boxd returns EPIPE instead of killing the agent (and leaving its
	// commands behind): Serve then ends and kills them.
	signal.Ignore(syscall.SIGPIPE)
	if len(os.Args) > 1 && os.Args[1] == "stat" {
		for _, p := range os.Args[2:] {
			os.Stdout.WriteString(mounts.StatLine(p) + "\n")
		}
		return
	}
	if len(os.Args) > 1 {
		os.Stderr.WriteString("boxagent takes no arguments: boxd starts it and speaks to it on stdin/stdout\n")
		os.Exit(2)
	}
	if err := harden(); err != nil {
		os.Stderr.WriteString("boxagent: make the process non-dumpable: " + err.Error() + "\n")
		os.Exit(1)
	}
	if err := agent.Serve(os.Stdin, os.Stdout, os.Environ()); err != nil {
		os.Stderr.WriteString("boxagent: " + err.Error() + "\n")
		os.Exit(1)
	}
}
