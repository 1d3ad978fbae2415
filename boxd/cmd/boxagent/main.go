// Command boxagent is boxd's in-sandbox exec agent (see internal/agent). Build it static:
// CGO_ENABLED=0 go build ./boxd/cmd/boxagent.
//
//	boxagent                          direct mode (the docker backend): boxd bind-mounts it read-only into a
//	                                  sandbox and starts it through one Engine API exec, as the container's own
//	                                  user; it speaks the agent protocol on stdin/stdout and nothing else, and
//	                                  exits when its input ends, killing whatever it still runs.
//	boxagent daemon --socket NAME     daemon mode (the kubernetes backend): the sandbox container's main
//	                                  process (PID 1, reaping every orphan), serving the protocol on a unix
//	                                  socket (NAME starting with '@': an abstract socket of the Pod's network
//	                                  namespace); commands survive the connection that started them.
//	boxagent connect --socket NAME    what each Kubernetes exec stream of boxd runs: relays stdin/stdout to
//	                                  the daemon's socket.
//	boxagent stat PATH...             prints "<device> <inode>" (or "error <text>") per path, one line each,
//	                                  so that boxd can check, in a sandbox it has just started and on any image,
//	                                  that every bind mount is the host directory it validated
//	                                  (internal/mounts).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

func main() {
	// A write to a vanished peer returns EPIPE instead of killing the agent (and leaving its
	// commands behind). Notify, not Ignore: an ignored signal stays ignored in the commands
	// the agent starts, a caught one is reset to its default there.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	args := os.Args[1:]
	if len(args) == 0 {
		os.Exit(direct())
	}
	switch args[0] {
	case "stat":
		for _, p := range args[1:] {
			os.Stdout.WriteString(mounts.StatLine(p) + "\n")
		}
	case "daemon":
		os.Exit(daemon(args[1:]))
	case "connect":
		os.Exit(connect(args[1:]))
	case wsync.AgentSubcommand:
		os.Exit(runSync(args[1:]))
	default:
		fmt.Fprintf(os.Stderr, "boxagent: unknown mode %q: run it without arguments (boxd speaks to it on stdin/stdout), or as `daemon --socket NAME`, `connect --socket NAME` or `stat PATH...`\n", args[0])
		os.Exit(2)
	}
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "boxagent: "+format+"\n", args...)
	return 1
}

func direct() int {
	if err := harden(); err != nil {
		return fail("make the process non-dumpable: %v", err)
	}
	if err := agent.Serve(os.Stdin, os.Stdout, os.Environ()); err != nil {
		return fail("%v", err)
	}
	return 0
}

func socketFlag(mode string, args []string, extra func(*flag.FlagSet)) (string, error) {
	fs := flag.NewFlagSet("boxagent "+mode, flag.ContinueOnError)
	sock := fs.String("socket", "", "unix socket of the daemon ('@name': abstract)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if *sock == "" || fs.NArg() > 0 {
		return "", fmt.Errorf("boxagent %s takes --socket NAME (and no other arguments)", mode)
	}
	return *sock, nil
}

func daemon(args []string) int {
	detach := agent.DefaultDetachTimeout
	sock, err := socketFlag("daemon", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&detach, "detach-timeout", detach, "how long a command whose connection ended is kept for a re-attach before its process group is killed")
	})
	if err != nil {
		return fail("%v", err)
	}
	if detach <= 0 {
		return fail("--detach-timeout must be positive, got %s", detach)
	}
	if err := harden(); err != nil {
		return fail("make the process non-dumpable: %v", err)
	}
	if err := guardInit(); err != nil {
		return fail("%v", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fail("listen on %s: %v", sock, err)
	}
	a := agent.NewAgent(agent.Options{Environ: os.Environ(), DetachTimeout: detach, ReapAll: true,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", args...)
		}})
	if err := a.Listen(context.Background(), ln); err != nil {
		return fail("serve %s: %v", sock, err)
	}
	return 0
}

// connect relays stdin to the daemon and the daemon to stdout. End of stdin half-closes the
// socket (the daemon detaches this connection's commands, they keep running); the end of
// the socket ends the relay.
func connect(args []string) int {
	sock, err := socketFlag("connect", args, nil)
	if err != nil {
		return fail("%v", err)
	}
	if err := harden(); err != nil {
		return fail("make the process non-dumpable: %v", err)
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fail("connect to the agent daemon at %s: %v (is the sandbox container's main process `boxagent daemon`?)", sock, err)
	}
	go func() {
		_, _ = io.Copy(conn, os.Stdin)
		_ = conn.CloseWrite()
	}()
	if _, err := io.Copy(os.Stdout, conn); err != nil && !errors.Is(err, net.ErrClosed) {
		return fail("relay from the agent daemon: %v", err)
	}
	return 0
}
