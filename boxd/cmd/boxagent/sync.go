package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// runSync is `boxagent sync`: the sandbox end of one workspace sync of boxd's isolated
// workspace mode (internal/wsync): it reads one request on stdin, applies it to the mounts
// under / (push) or answers with what the sandbox changed (pull), writes the response on
// stdout and exits. It runs as the sandbox's user and boxd trusts nothing it sends.
func runSync(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "boxagent sync takes no arguments: boxd speaks to it on stdin/stdout")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := wsync.Serve(ctx, os.Stdin, os.Stdout, wsync.ServeOptions{Base: "/"}); err != nil {
		fmt.Fprintln(os.Stderr, "boxagent sync:", err)
		return 1
	}
	return 0
}
