// Package agent is the in-sandbox exec agent's wire protocol and both of its ends: the Agent
// runs inside a sandbox container (cmd/boxagent), the Client runs in boxd (internal/docker,
// internal/kube). They talk over ONE long-lived stream per sandbox, so there is no network
// listener to reach and no new exec (runc, shim, API server) per command.
//
// Two ways to run the agent:
//   - direct (Serve; the docker backend): the agent speaks on the stdin/stdout of one Engine API
//     exec, and everything it runs is killed when that stream ends;
//   - daemon (Agent.Listen; the kubernetes backend): the agent is the sandbox container's main
//     process (PID 1, reaping every orphan) and serves connections on a unix socket; each
//     Kubernetes exec stream runs `boxagent connect`, which relays its stdin/stdout to the
//     socket. Commands belong to the daemon, not to a connection: when a stream drops they
//     keep running, their output is kept (bounded, see OutputWindow) and a new connection
//     re-attaches them (Attach) without losing or repeating a byte. A command nobody
//     re-attaches within the detach timeout is killed with its process group.
//
// A frame is a 9-byte header — type (1 byte), request id (4 bytes, big endian), payload length
// (4 bytes, big endian) — followed by the payload. Payloads are bounded by MaxPayload on both
// sides; a frame of an unknown type, a type sent in the wrong direction or an oversized frame
// ends the connection. The package uses the standard library only, so the agent binary stays
// small and static.
//
// Flow control and resumption. Every byte of a command's stdout and stderr has an offset (per
// stream, from 0). The agent keeps what it read from a command's pipe until boxd acknowledges
// it (Ack: the offsets boxd's consumer has taken); at most OutputWindow unacknowledged bytes
// per stream, after which the agent stops reading the pipe, so a command whose output nobody
// takes blocks in write(2) as it would on a full pipe (back-pressure, nothing is dropped).
// Stdin works the other way round: boxd keeps what it sent until the agent acknowledges that
// it was written to the command (StdinAck), at most StdinWindow bytes in flight. A reconnecting
// boxd sends Attach with the offsets it has consumed and received; the agent answers Attached
// with the stdin offsets it has written and received and resends output from the received
// offsets; boxd resends stdin from the agent's. A command's exit code is kept until boxd
// collects it (Release), so an Exit lost with a dropped stream is sent again.
package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Type is a frame type.
type Type uint8

const (
	// Hello (agent → boxd, id 0) is the agent's first frame; its payload is Version.
	Hello Type = 1
	// Start (boxd → agent) starts command id; its payload is an encoded Command.
	Start Type = 2
	// Stdout and Stderr (agent → boxd) carry a chunk of command id's output.
	Stdout Type = 3
	Stderr Type = 4
	// Exit (agent → boxd) ends command id; its payload is the exit code (int32). It follows
	// every output frame of the command.
	Exit Type = 5
	// Kill (boxd → agent) signals the process group of command id; payload: signal (uint32).
	Kill Type = 6
	// Error (agent → boxd) refuses request id (a malformed Start, an Attach of an unknown id)
	// or, with id 0, the whole connection (the agent then ends it); payload: a message.
	Error Type = 7
	// Stdin (boxd → agent) is data for command id's stdin (a command started with
	// Command.Stdin); at most StdinWindow bytes may be unacknowledged.
	Stdin Type = 8
	// StdinClose (boxd → agent) closes command id's stdin once what was sent is written.
	StdinClose Type = 9
	// Attach (boxd → agent) re-attaches command id to this connection; payload: stdout
	// consumed, stdout received, stderr consumed, stderr received (uint64 each). The agent
	// answers Attached, then sends output from the received offsets (and Exit once done).
	Attach Type = 10
	// Ack (boxd → agent): command id's output was consumed up to these offsets (stdout,
	// stderr; uint64 each); the agent frees it.
	Ack Type = 11
	// Release (boxd → agent): boxd has command id's Exit; the agent forgets the command (one
	// still running is killed with its process group).
	Release Type = 12
	// Attached (agent → boxd) answers Attach; payload: stdin written, stdin received (uint64
	// each) and a flags byte (1: StdinClose received).
	Attached Type = 13
	// StdinAck (agent → boxd): command id's stdin was written (or discarded, once the command
	// closed it) up to this offset (uint64).
	StdinAck Type = 14
)

func (t Type) String() string {
	switch t {
	case Hello:
		return "hello"
	case Start:
		return "start"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case Exit:
		return "exit"
	case Kill:
		return "kill"
	case Error:
		return "error"
	case Stdin:
		return "stdin"
	case StdinClose:
		return "stdin-close"
	case Attach:
		return "attach"
	case Ack:
		return "ack"
	case Release:
		return "release"
	case Attached:
		return "attached"
	case StdinAck:
		return "stdin-ack"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	// Version is the Hello payload; boxd refuses an agent that sends anything else.
	Version = "boxagent/2"
	// HeaderSize is the size of a frame header.
	HeaderSize = 9
	// MaxPayload bounds every frame. A single exec argument cannot exceed 128 KiB on Linux
	// (MAX_ARG_STRLEN) anyway; larger commands go through the normal exec path.
	MaxPayload = 1 << 20
	// ChunkSize is the largest output chunk the agent sends, and the largest stdin chunk boxd
	// sends.
	ChunkSize = 32 << 10
	// OutputWindow bounds the bytes of one output stream of one command that the agent holds
	// unacknowledged; then it stops reading the command's pipe.
	OutputWindow = 1 << 20
	// StdinWindow bounds the stdin bytes of one command sent and not yet acknowledged.
	StdinWindow = 1 << 20
	// AckEvery: boxd acknowledges output once it consumed this much since its last Ack.
	AckEvery = OutputWindow / 4
	// EnvMark is set (last) in the environment of the agent's own exec. What the engine put
	// before it is the exec environment a `docker exec` without -e gets; what the runtime (runc)
	// appended after it (HOME when the image does not set it) is appended to each command's
	// environment only when the command's variables do not set it, exactly as for an exec.
	EnvMark = "BOXD_EXEC_AGENT=1"
)

// ErrFrameTooLarge is returned for a frame whose payload exceeds the bound.
var ErrFrameTooLarge = errors.New("frame too large")

// Frame is one protocol message.
type Frame struct {
	Type    Type
	ID      uint32
	Payload []byte
}

// Append appends f's encoding to buf.
func (f Frame) Append(buf []byte) []byte {
	var h [HeaderSize]byte
	h[0] = byte(f.Type)
	binary.BigEndian.PutUint32(h[1:5], f.ID)
	binary.BigEndian.PutUint32(h[5:9], uint32(len(f.Payload)))
	return append(append(buf, h[:]...), f.Payload...)
}

// WriteFrame writes f with a single Write call (callers serialise writers).
func WriteFrame(w io.Writer, f Frame) error {
	if len(f.Payload) > MaxPayload {
		return fmt.Errorf("write %s frame of %d bytes: %w", f.Type, len(f.Payload), ErrFrameTooLarge)
	}
	if _, err := w.Write(f.Append(make([]byte, 0, HeaderSize+len(f.Payload)))); err != nil {
		return fmt.Errorf("write %s frame: %w", f.Type, err)
	}
	return nil
}

// ReadFrame reads one frame whose payload is at most max bytes. A stream that ends between
// frames returns io.EOF; one that ends inside a frame returns io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, max int) (Frame, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	f := Frame{Type: Type(h[0]), ID: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	if uint64(n) > uint64(max) {
		return Frame{}, fmt.Errorf("read %s frame of %d bytes (limit %d): %w", f.Type, n, max, ErrFrameTooLarge)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read %s frame payload: %w", f.Type, err)
	}
	return f, nil
}

// Command is what a Start frame asks the agent to run.
type Command struct {
	Argv []string
	// Env are KEY=VALUE entries merged over the exec environment the way the engine merges
	// `docker exec -e` (a known key is replaced in place, a new one appended in order).
	Env []string
	// Dir is the working directory; "" keeps the container's.
	Dir string
	// Stdin gives the command a pipe as stdin (Stdin/StdinClose frames); without it stdin is
	// /dev/null.
	Stdin bool
}

// flagStdin is bit 0 of a Start payload's flags.
const flagStdin = 1

// EncodeCommand encodes c as a Start payload: argc, argv, envc, env, dir, flags; every count,
// string length and the flags a big-endian uint32.
func EncodeCommand(c Command) ([]byte, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("encode command: empty argv")
	}
	n := 16 + 4*(len(c.Argv)+len(c.Env)) + len(c.Dir)
	for _, s := range c.Argv {
		n += len(s)
	}
	for _, s := range c.Env {
		n += len(s)
	}
	if n > MaxPayload {
		return nil, fmt.Errorf("encode command of %d bytes (limit %d): %w", n, MaxPayload, ErrFrameTooLarge)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.Argv)))
	for _, s := range c.Argv {
		b = appendString(b, s)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.Env)))
	for _, s := range c.Env {
		b = appendString(b, s)
	}
	b = appendString(b, c.Dir)
	var flags uint32
	if c.Stdin {
		flags |= flagStdin
	}
	return binary.BigEndian.AppendUint32(b, flags), nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// decoder reads a Start payload, refusing anything out of bounds.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u32(what string) uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = fmt.Errorf("truncated %s", what)
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) str(what string) string {
	n := d.u32(what + " length")
	if d.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(d.b)) {
		d.err = fmt.Errorf("%s length %d exceeds the frame", what, n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	if strings.IndexByte(s, 0) >= 0 {
		d.err = fmt.Errorf("%s contains a NUL byte", what)
	}
	return s
}

func (d *decoder) list(what string) []string {
	n := d.u32(what + " count")
	if d.err != nil {
		return nil
	}
	// Every entry takes at least its 4-byte length: a count beyond that is a lie.
	if uint64(n)*4 > uint64(len(d.b)) {
		d.err = fmt.Errorf("%s count %d exceeds the frame", what, n)
		return nil
	}
	out := make([]string, 0, n)
	for i := uint32(0); i < n && d.err == nil; i++ {
		out = append(out, d.str(what))
	}
	return out
}

// DecodeCommand decodes a Start payload.
func DecodeCommand(p []byte) (Command, error) {
	d := &decoder{b: p}
	c := Command{Argv: d.list("argv"), Env: d.list("env"), Dir: d.str("dir")}
	flags := d.u32("flags")
	switch {
	case d.err != nil:
		return Command{}, fmt.Errorf("decode command: %w", d.err)
	case flags&^flagStdin != 0:
		return Command{}, fmt.Errorf("decode command: unknown flags %#x", flags&^flagStdin)
	case len(d.b) != 0:
		return Command{}, fmt.Errorf("decode command: %d trailing bytes", len(d.b))
	case len(c.Argv) == 0 || c.Argv[0] == "":
		return Command{}, errors.New("decode command: empty argv")
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return Command{}, fmt.Errorf("decode command: env entry %q is not KEY=VALUE", e)
		}
	}
	c.Stdin = flags&flagStdin != 0
	return c, nil
}

// u64s encodes offsets as big-endian uint64s.
func u64s(v ...uint64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return b
}

// parseU64s decodes a payload of exactly n big-endian uint64s.
func parseU64s(t Type, p []byte, n int) ([]uint64, error) {
	if len(p) != 8*n {
		return nil, fmt.Errorf("%s frame with a %d-byte payload (want %d)", t, len(p), 8*n)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(p[8*i:])
	}
	return out, nil
}

// MergeEnv returns the environment of a command: overrides merged over base the way the
// engine merges `docker exec -e` entries over the container's (a key already in base is
// replaced in place, a new key appended in order), then every runtime-appended entry whose
// key is still missing (runc appends HOME last when nothing set it).
func MergeEnv(base, overrides, appended []string) []string {
	out := append(make([]string, 0, len(base)+len(overrides)+len(appended)), base...)
	at := make(map[string]int, len(base))
	for i, e := range base {
		k, _, _ := strings.Cut(e, "=")
		at[k] = i
	}
	for _, e := range overrides {
		k, _, _ := strings.Cut(e, "=")
		if i, ok := at[k]; ok {
			out[i] = e
			continue
		}
		out = append(out, e)
	}
	have := make(map[string]bool, len(out))
	for _, e := range out {
		k, _, _ := strings.Cut(e, "=")
		have[k] = true
	}
	for _, e := range appended {
		if k, _, _ := strings.Cut(e, "="); !have[k] {
			out = append(out, e)
		}
	}
	return out
}

// SplitEnv splits the agent's own environment at EnvMark into the engine's exec environment
// (before) and what the runtime appended (after). Without the mark everything is base.
func SplitEnv(environ []string) (base, appended []string) {
	for i, e := range environ {
		if e == EnvMark {
			return environ[:i:i], environ[i+1:]
		}
	}
	return environ, nil
}
