package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DrainDelay is how long the agent keeps reading a command's output after the command itself
// exited, for background children that still hold its stdout/stderr; then the pipes are
// closed and Exit is sent. The Docker Engine waits the same 2 s for an exec's streams.
const DrainDelay = 2 * time.Second

// server is the agent's end of one connection.
type server struct {
	out      io.Writer
	wmu      sync.Mutex
	base     []string
	appended []string

	mu    sync.Mutex
	procs map[uint32]*proc
	wg    sync.WaitGroup
}

// proc is one running command. pid is 0 until it started; a Kill arriving before that is
// remembered in pending and delivered right after the start.
type proc struct {
	pid     int
	pending syscall.Signal
}

// Serve runs the agent on one connection: it sends Hello, then runs every Start in its own
// session and process group (Setsid, as the runtime does for every `docker exec`) and streams
// its output, until in ends. environ is the agent's own environment (see EnvMark). On return
// — end of input, a refused frame or a broken output — every command still running is killed
// with its whole process group, so nothing outlives the connection that started it.
func Serve(in io.Reader, out io.Writer, environ []string) error {
	base, appended := SplitEnv(environ)
	s := &server{out: out, base: base, appended: appended, procs: map[uint32]*proc{}}
	defer s.shutdown()
	if err := s.send(Frame{Type: Hello, Payload: []byte(Version)}); err != nil {
		return err
	}
	r := bufio.NewReaderSize(in, 64<<10)
	for {
		f, err := ReadFrame(r, MaxPayload)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.refuse(err.Error())
			return err
		}
		switch f.Type {
		case Start:
			if err := s.start(f); err != nil {
				return err
			}
		case Kill:
			if len(f.Payload) != 4 {
				s.refuse(fmt.Sprintf("kill frame with a %d-byte payload", len(f.Payload)))
				return fmt.Errorf("refused kill frame with a %d-byte payload", len(f.Payload))
			}
			sig := binary.BigEndian.Uint32(f.Payload)
			if sig == 0 || sig > 64 {
				s.refuse(fmt.Sprintf("kill frame with signal %d", sig))
				return fmt.Errorf("refused kill frame with signal %d", sig)
			}
			s.kill(f.ID, syscall.Signal(sig))
		default:
			s.refuse("unexpected " + f.Type.String() + " frame")
			return fmt.Errorf("refused unexpected %s frame", f.Type)
		}
	}
}

func (s *server) send(f Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return WriteFrame(s.out, f)
}

// refuse tells boxd why the connection ends (best effort).
func (s *server) refuse(msg string) {
	_ = s.send(Frame{Type: Error, Payload: []byte(msg)})
}

// start registers and launches one command. A malformed command or a reused id is refused
// for that id only; the connection goes on.
func (s *server) start(f Frame) error {
	cmd, err := DecodeCommand(f.Payload)
	if err == nil && f.ID == 0 {
		err = errors.New("request id 0 is reserved")
	}
	if err == nil {
		s.mu.Lock()
		if _, busy := s.procs[f.ID]; busy {
			err = fmt.Errorf("request id %d is already running", f.ID)
		} else {
			s.procs[f.ID] = &proc{}
		}
		s.mu.Unlock()
	}
	if err != nil {
		return s.send(Frame{Type: Error, ID: f.ID, Payload: []byte(err.Error())})
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		code := s.run(f.ID, cmd)
		s.mu.Lock()
		delete(s.procs, f.ID)
		s.mu.Unlock()
		var p [4]byte
		binary.BigEndian.PutUint32(p[:], uint32(int32(code)))
		_ = s.send(Frame{Type: Exit, ID: f.ID, Payload: p[:]})
	}()
	return nil
}

// kill signals the process group of command id (ignored when it already ended).
func (s *server) kill(id uint32, sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[id]
	switch {
	case !ok:
	case p.pid == 0:
		p.pending = sig
	default:
		_ = syscall.Kill(-p.pid, sig)
	}
}

// shutdown kills every command's process group and waits for their Exit frames to be sent
// (or fail).
func (s *server) shutdown() {
	s.mu.Lock()
	for _, p := range s.procs {
		if p.pid == 0 {
			p.pending = syscall.SIGKILL
		} else {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// run executes cmd and returns its exit code: the exit status, 128+n when a signal n ended it
// (what a shell and the engine report), 127 when the program is not found and 126 when it
// cannot be executed (with a message on stderr, like a shell).
func (s *server) run(id uint32, cmd Command) int {
	env := MergeEnv(s.base, cmd.Env, s.appended)
	fail := func(code int, err error) int {
		_ = s.send(Frame{Type: Stderr, ID: id, Payload: []byte(err.Error() + "\n")})
		return code
	}
	path, err := lookPath(cmd.Argv[0], env)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fail(127, err)
		}
		return fail(126, err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fail(126, fmt.Errorf("open %s: %w", os.DevNull, err))
	}
	defer null.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(126, fmt.Errorf("create stdout pipe: %w", err))
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fail(126, fmt.Errorf("create stderr pipe: %w", err))
	}
	p, err := os.StartProcess(path, cmd.Argv, &os.ProcAttr{Dir: cmd.Dir, Env: env,
		Files: []*os.File{null, outW, errW}, Sys: &syscall.SysProcAttr{Setsid: true}})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fail(126, fmt.Errorf("%s: %w", cmd.Argv[0], err))
	}
	s.mu.Lock()
	pr := s.procs[id]
	pr.pid = p.Pid
	if pr.pending != 0 {
		_ = syscall.Kill(-p.Pid, pr.pending)
	}
	s.mu.Unlock()

	var pumps sync.WaitGroup
	pump := func(r *os.File, t Type) {
		defer pumps.Done()
		buf := make([]byte, ChunkSize)
		broken := false
		for {
			n, err := r.Read(buf)
			if n > 0 && !broken {
				// Once boxd is gone keep reading, so the command never blocks on a full pipe;
				// the end of input that follows kills it.
				broken = s.send(Frame{Type: t, ID: id, Payload: buf[:n]}) != nil
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(outR, Stdout)
	go pump(errR, Stderr)
	st, werr := p.Wait()
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(DrainDelay):
		// Closing an *os.File pipe unblocks its pending Read.
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()
	if werr != nil {
		return fail(126, fmt.Errorf("wait for %s: %w", cmd.Argv[0], werr))
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// lookPath resolves name as execve-by-PATH does, with the command's own PATH.
func lookPath(name string, env []string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fs.ErrPermission
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return name, nil
	}
	pathVar := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, fs.ErrPermission) && denied == nil {
			denied = fmt.Errorf("%s: %w", name, err)
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH: %w", name, fs.ErrNotExist)
}
