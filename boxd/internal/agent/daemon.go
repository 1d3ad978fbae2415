package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// MaxConnections bounds the connections a daemon serves at once (boxd holds one per sandbox;
// the rest covers streams that dropped and have not noticed yet).
const MaxConnections = 16

// reaper waits for every child of the process (Options.ReapAll): a command's status goes to
// its start's channel, an orphan's is discarded. Starting a command and reaping hold one lock,
// so a command that exits at once is not reaped before it is registered.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan syscall.WaitStatus
}

func newReaper() *reaper {
	r := &reaper{waiting: map[int]chan syscall.WaitStatus{}}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		for range sig {
			r.reap()
		}
	}()
	r.reap() // children that ended before the notification was set up
	return r
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch := r.waiting[pid]; ch != nil {
			delete(r.waiting, pid)
			ch <- ws
		}
	}
}

func (r *reaper) start(fork func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiting[pid] = ch
	return pid, ch, nil
}

// Listen serves connections on ln until ctx ends (daemon mode; set a DetachTimeout); then it
// closes them and returns once they are finished. A peer that is one of the agent's own
// commands, or a descendant of one, is refused: only processes started from outside the
// sandbox (boxd's `boxagent connect`, through the Kubernetes exec API) may drive the agent.
func (a *Agent) Listen(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[*net.UnixConn]bool{}
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range open {
			_ = c.Close()
		}
	})
	defer func() {
		stop()
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	slots := make(chan struct{}, MaxConnections)
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			a.opts.Logf("boxagent: accept: %v", err)
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			a.refuseConn(conn, fmt.Sprintf("the agent already serves %d connections", MaxConnections))
			continue
		}
		mu.Lock()
		open[conn] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer func() {
				mu.Lock()
				delete(open, conn)
				mu.Unlock()
				_ = conn.Close()
			}()
			if err := checkPeer(conn); err != nil {
				a.opts.Logf("boxagent: refused a connection: %v", err)
				a.refuseConn(conn, err.Error())
				return
			}
			if err := a.ServeConn(conn, conn); err != nil && ctx.Err() == nil {
				a.opts.Logf("boxagent: connection ended: %v", err)
			}
		}()
	}
}

// refuseConn sends Hello and a connection-wide Error, so that the peer learns why.
func (a *Agent) refuseConn(conn *net.UnixConn, msg string) {
	defer conn.Close()
	c := &aconn{w: conn}
	if c.send(Frame{Type: Hello, Payload: []byte(Version)}) == nil {
		_ = c.send(Frame{Type: Error, Payload: []byte(msg)})
	}
}
