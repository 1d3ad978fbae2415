package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/gorilla/websocket"
)

// Options of a run.
type Options struct {
	BoxdBinary string // built boxd (boxagent next to it for the exec agent rows)
	BoxdLog    string // file boxd's log goes to ("" = discarded)
	Image      string // sandbox image on the engine
	BoxdImage  string // boxd image whose size is reported
	N          int    // samples per workload
	Parallel   int    // sessions created at once in the concurrency workload
	Lines      int    // relay round trips
	Concurrent []int  // session counts of the concurrent-execs workload (e.g. 16, 64)
	Execs      int    // execs per session in the concurrent-execs workload
}

const token = "bench-token-0123456789abcdefghijklmnopqrstuvw"

// AgentPath is where boxd mounts the exec agent in a sandbox (docker.AgentPath; not imported,
// the benchmark only speaks the protocol).
const AgentPath = "/.boxd-agent"

// Run measures every workload, interleaving the raw API and boxd.
func Run(ctx context.Context, o Options) (*Report, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	host, _ := os.Hostname()
	rep := &Report{Machine: fmt.Sprintf("%s, %d cores, %s/%s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH), Started: time.Now(), Facts: map[string]string{}}

	start := time.Now()
	b, err := startBoxd(ctx, o.BoxdBinary, o.BoxdLog)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	rep.Facts["boxd start-to-ready"] = fmt.Sprintf("%.1f ms", ms(time.Since(start)))
	rep.Facts["boxd RSS idle"] = b.rss()
	c, err := b.dial()
	if err != nil {
		return nil, err
	}
	root, _ := os.MkdirTemp("", "boxbench")
	defer os.RemoveAll(root)
	if _, err := c.call("box_init", map[string]any{"local": map[string]any{"host_root": root}}); err != nil {
		return nil, err
	}
	raw := &rawAPI{cli: cli, image: o.Image}
	add := rep.add
	spec := func(id string, extra map[string]any) map[string]any {
		m := map[string]any{"session_id": id, "image": o.Image, "timeout_sec": 60}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	// Cold session create.
	for i := 0; i < o.N; i++ {
		d, id, err := raw.create(ctx)
		if err != nil {
			return nil, err
		}
		add("cold session create", "raw", d)
		raw.remove(ctx, id)
		sid := fmt.Sprintf("cold-%d", i)
		t := time.Now()
		if _, err := c.call("box_create_session", spec(sid, nil)); err != nil {
			return nil, err
		}
		add("cold session create", "boxd", time.Since(t))
		_, _ = c.call("box_delete_session", map[string]any{"session_id": sid})
	}

	// Exec round trips in a warm session: the raw API, boxd's docker exec path (session
	// "warm", created while box.docker.exec_agent is off) and boxd's exec agent (session
	// "warm-agent", created after box_init turned it on; its first exec, which starts the
	// agent, is not counted).
	_, warm, err := raw.create(ctx)
	if err != nil {
		return nil, err
	}
	defer raw.remove(ctx, warm)
	if _, err := c.call("box_create_session", spec("warm", nil)); err != nil {
		return nil, err
	}
	if _, err := c.call("box_init", map[string]any{"local": map[string]any{"host_root": root}, "docker": map[string]any{"exec_agent": true}}); err != nil {
		return nil, err
	}
	if _, err := c.call("box_create_session", spec("warm-agent", nil)); err != nil {
		return nil, err
	}
	out, err := c.call("box_exec", spec("warm-agent", map[string]any{"cmd": `tr '\0' ' ' < /proc/$PPID/cmdline`}))
	if err != nil {
		return nil, err
	}
	if got, _ := out["stdout"].(string); got != AgentPath {
		return nil, fmt.Errorf("session warm-agent does not run commands through the exec agent (parent %q): is boxagent next to boxd?", got)
	}
	for _, wl := range []struct{ name, cmd string }{
		{"exec round trip `true`", "true"},
		{"exec 1 MiB stdout", "head -c 1048576 /dev/zero"},
		// The same size of text: NUL bytes become 6-byte \u0000 escapes in the JSON reply.
		{"exec 1 MiB text stdout", "head -c 1048576 /dev/zero | tr '\\0' x"},
	} {
		for i := 0; i < o.N; i++ {
			d, err := raw.exec(ctx, warm, wl.cmd)
			if err != nil {
				return nil, err
			}
			add(wl.name, "raw", d)
			for _, way := range []struct{ name, session string }{{"boxd", "warm"}, {"boxd agent", "warm-agent"}} {
				t := time.Now()
				if _, err := c.call("box_exec", spec(way.session, map[string]any{"cmd": wl.cmd})); err != nil {
					return nil, err
				}
				add(wl.name, way.name, time.Since(t))
			}
		}
	}
	// The other workloads run with the agent off again, as boxd does by default.
	if _, err := c.call("box_init", map[string]any{"local": map[string]any{"host_root": root}, "docker": map[string]any{}}); err != nil {
		return nil, err
	}

	// Parallel creates: wall time of N sessions created at once.
	for round := 0; round < 3; round++ {
		wall, ids, err := raw.parallelCreate(ctx, o.Parallel)
		if err != nil {
			return nil, err
		}
		add(fmt.Sprintf("%d parallel creates (wall)", o.Parallel), "raw", wall)
		for _, id := range ids {
			raw.remove(ctx, id)
		}
		var wg sync.WaitGroup
		conns := make([]*wsConn, o.Parallel)
		for i := range conns {
			if conns[i], err = b.dial(); err != nil {
				return nil, err
			}
		}
		t := time.Now()
		errs := make(chan error, o.Parallel)
		for i := 0; i < o.Parallel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := conns[i].call("box_create_session", spec(fmt.Sprintf("par-%d-%d", round, i), nil))
				errs <- err
			}()
		}
		wg.Wait()
		add(fmt.Sprintf("%d parallel creates (wall)", o.Parallel), "boxd", time.Since(t))
		close(errs)
		for err := range errs {
			if err != nil {
				return nil, err
			}
		}
		if round == 0 {
			rep.Facts[fmt.Sprintf("boxd RSS with %d idle sessions", o.Parallel+1)] = b.rss()
		}
		_, _ = c.call("box_shutdown", map[string]any{})
		for _, cc := range conns {
			cc.ws.Close()
		}
	}

	// N sessions each running M execs, all at once: raw, boxd (docker exec), boxd agent.
	agent := func(on bool) error {
		docker := map[string]any{}
		if on {
			docker["exec_agent"] = true
		}
		_, err := c.call("box_init", map[string]any{"local": map[string]any{"host_root": root}, "docker": docker})
		return err
	}
	for _, n := range o.Concurrent {
		l := &concurrentLoad{sessions: n, execs: o.Execs, raw: raw, boxd: b, spec: spec, add: add, facts: rep.Facts}
		if err := l.runRaw(ctx); err != nil {
			return nil, err
		}
		if err := l.runBoxd("boxd", fmt.Sprintf("conc%d", n)); err != nil {
			return nil, err
		}
		if err := agent(true); err != nil {
			return nil, err
		}
		if err := l.runBoxd("boxd agent", fmt.Sprintf("conc%d-agent", n)); err != nil {
			return nil, err
		}
		if err := agent(false); err != nil {
			return nil, err
		}
	}

	// Managed-process relay: line round trip through `cat`, and throughput.
	if _, err := c.call("box_create_session", spec("relay", map[string]any{"persistent": true})); err != nil {
		return nil, err
	}
	if _, err := c.call("box_start_managed_process", map[string]any{"session_id": "relay", "spec": map[string]any{"process_id": "cat", "command": "cat"}}); err != nil {
		return nil, err
	}
	relay, err := b.relay("relay", "cat")
	if err != nil {
		return nil, err
	}
	defer relay.Close()
	for i := 0; i < o.Lines; i++ {
		t := time.Now()
		if err := relay.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)); err != nil {
			return nil, err
		}
		if _, _, err := relay.ReadMessage(); err != nil {
			return nil, err
		}
		add("relay line round trip", "boxd", time.Since(t))
	}
	line := strings.Repeat("x", 64<<10)
	const lines = 400
	t := time.Now()
	go func() {
		for i := 0; i < lines; i++ {
			_ = relay.WriteMessage(websocket.TextMessage, []byte(line))
		}
	}()
	for i := 0; i < lines; i++ {
		if _, _, err := relay.ReadMessage(); err != nil {
			return nil, err
		}
	}
	secs := time.Since(t).Seconds()
	rep.Facts["relay throughput (64 KiB lines, both directions through cat)"] = fmt.Sprintf("%.1f MB/s", float64(lines*len(line))/secs/1e6)
	rep.Facts["boxd RSS after the workloads"] = b.rss()
	if ins, err := cli.ImageInspect(ctx, o.BoxdImage); err == nil {
		rep.Facts["boxd image size"] = fmt.Sprintf("%.1f MiB", float64(ins.Size)/(1<<20))
	}
	_, _ = c.call("box_shutdown", map[string]any{})
	return rep, nil
}

type rawAPI struct {
	cli   *client.Client
	image string
}

func (r *rawAPI) create(ctx context.Context) (time.Duration, string, error) {
	pids := int64(128)
	t := time.Now()
	c, err := r.cli.ContainerCreate(ctx, &container.Config{Image: r.image, Cmd: []string{"sh", "-lc", "while true; do sleep 3600; done"}},
		&container.HostConfig{NetworkMode: "none", ReadonlyRootfs: true, Tmpfs: map[string]string{"/tmp": "size=64m"},
			Resources: container.Resources{Memory: 512 << 20, PidsLimit: &pids, NanoCPUs: 1e9}}, nil, nil, "")
	if err != nil {
		return 0, "", fmt.Errorf("raw create: %w", err)
	}
	if err := r.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return 0, "", fmt.Errorf("raw start: %w", err)
	}
	return time.Since(t), c.ID, nil
}

func (r *rawAPI) remove(ctx context.Context, id string) {
	_ = r.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
}

func (r *rawAPI) parallelCreate(ctx context.Context, n int) (time.Duration, []string, error) {
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	t := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ids[i], errs[i] = r.create(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, ids, err
		}
	}
	return time.Since(t), ids, nil
}

// exec is one round trip the way boxd does it: exec create, attach, demultiplex, inspect.
func (r *rawAPI) exec(ctx context.Context, id, cmd string) (time.Duration, error) {
	t := time.Now()
	e, err := r.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: []string{"sh", "-lc", cmd}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, fmt.Errorf("raw exec create: %w", err)
	}
	att, err := r.cli.ContainerExecAttach(ctx, e.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("raw exec attach: %w", err)
	}
	_, _ = stdcopy.StdCopy(io.Discard, io.Discard, att.Reader)
	att.Close()
	if _, err := r.cli.ContainerExecInspect(ctx, e.ID); err != nil {
		return 0, fmt.Errorf("raw exec inspect: %w", err)
	}
	return time.Since(t), nil
}

type boxdProc struct {
	cmd  *exec.Cmd
	addr string
}

// startBoxd starts the boxd binary on a free loopback port with extraEnv added to this
// process's environment, and waits for /readyz.
func startBoxd(ctx context.Context, bin, logFile string, extraEnv ...string) (*boxdProc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, bin, "--host", "127.0.0.1", "--ws-control-port", port)
	// Its own scope: the start-up recovery of other (unscoped) runtimes sharing the engine —
	// test suites — leaves the benchmark's sandboxes alone, and its own leaves theirs.
	cmd.Env = append(append(os.Environ(), "LANGBOT_BOX_CONTROL_TOKEN="+token, fmt.Sprintf("BOXD_SCOPE=bench-%d", os.Getpid())), extraEnv...)
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			return nil, fmt.Errorf("create boxd log: %w", err)
		}
		defer f.Close() // the child has its own copy
		cmd.Stderr = f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start boxd: %w", err)
	}
	b := &boxdProc{cmd: cmd, addr: addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return b, nil
			}
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("boxd did not become ready on %s", addr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (b *boxdProc) stop() {
	_ = b.cmd.Process.Signal(os.Interrupt)
	_ = b.cmd.Wait()
}

func (b *boxdProc) rss() string {
	kb := b.rssKiB()
	if kb == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", kb/1024)
}

type wsConn struct {
	ws  *websocket.Conn
	seq int
}

var benchCtx = map[string]any{"instance_uuid": "instance_bench", "workspace_uuid": "bench", "placement_generation": 1}

func headers() http.Header {
	h := http.Header{}
	h.Set("X-LangBot-Box-Control-Token", token)
	h.Set("X-LangBot-Instance-Id", "instance_bench")
	return h
}

func (b *boxdProc) dial() (*wsConn, error) {
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
	if err != nil {
		return nil, fmt.Errorf("dial boxd: %w", err)
	}
	return &wsConn{ws: ws}, nil
}

func (b *boxdProc) relay(session, process string) (*websocket.Conn, error) {
	h := headers()
	h.Set("X-LangBot-Workspace-Id", "bench")
	h.Set("X-LangBot-Placement-Generation", "1")
	phys := "ws-" + nsOf("instance_bench", "bench") + "-g1-" + session
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	ws, _, err := d.Dial("ws://"+b.addr+"/v1/sessions/"+phys+"/managed-process/"+process+"/ws", h)
	if err != nil {
		return nil, fmt.Errorf("dial relay: %w", err)
	}
	ws.SetReadLimit(16 << 20)
	return ws, nil
}

func (c *wsConn) call(action string, data any) (map[string]any, error) {
	c.seq++
	req := map[string]any{"seq_id": c.seq, "action": action, "data": data}
	if strings.HasPrefix(action, "box_") && action != "box_init" && action != "box_shutdown" {
		req["context"] = benchCtx
	}
	if err := c.ws.WriteJSON(req); err != nil {
		return nil, err
	}
	var r struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := c.ws.ReadJSON(&r); err != nil {
		return nil, err
	}
	if r.Code != 0 {
		return nil, fmt.Errorf("%s: %s", action, r.Message)
	}
	var out map[string]any
	_ = json.Unmarshal(r.Data, &out)
	return out, nil
}
