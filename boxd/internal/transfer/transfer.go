// Package transfer implements the RPC file transfer of §3.7 (`__file_chunk`): chunks are
// appended to a private file per key in a directory of the connection's own; keys are owned
// by the connection that wrote them and deleted when it closes, or when a consuming action
// takes the file.
package transfer

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

const (
	maxEncodedChunk = 21848
	maxChunk        = 16384
	maxKeys         = 128
)

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// Store holds one connection's transfers, in a private directory of its own under the
// storage directory: keys are scoped to the connection, so no other connection can take,
// append to or replace them.
type Store struct {
	maxBytes int64 // snapshot of limits.max_rpc_file_bytes at connection time
	base     int   // storage directory (checked to be boxd's own)
	name     string
	dir      int // this connection's directory in base

	mu     sync.Mutex
	owned  map[string]int64 // key -> bytes written
	closed bool
}

// DefaultDir is LANGBOT_PLUGIN_FILE_STORAGE_DIR, else <tmp>/lbp-rpc (boxd runs with a
// read-only root file system, so the Python default data/temp/lbp under the CWD is not used).
func DefaultDir() string {
	if d := os.Getenv("LANGBOT_PLUGIN_FILE_STORAGE_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "lbp-rpc")
}

const dirFix = "set LANGBOT_PLUGIN_FILE_STORAGE_DIR (or TMPDIR) to a directory only boxd's user can write, or remove it"

// openStorageDir creates dir (mode 0700) when missing and opens it, refusing a directory that
// another user could have planted or can write into: a symbolic link, a non-directory, one
// owned by another uid, or one writable by group or others. The checks are made on the opened
// handle, so the directory cannot be swapped after them.
func openStorageDir(dir string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return -1, fmt.Errorf("create the parent of file transfer directory %s: %w (%s)", dir, err, dirFix)
	}
	if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("create file transfer directory %s: %w (%s)", dir, err, dirFix)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var st unix.Stat_t
		switch {
		case unix.Lstat(dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
			return -1, fmt.Errorf("file transfer directory %s is a symbolic link (%s)", dir, dirFix)
		case errors.Is(err, unix.ENOTDIR):
			return -1, fmt.Errorf("file transfer directory %s is not a directory (%s)", dir, dirFix)
		}
		return -1, fmt.Errorf("open file transfer directory %s: %w (%s)", dir, err, dirFix)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat file transfer directory %s: %w", dir, err)
	}
	switch uid := uint32(os.Geteuid()); {
	case st.Uid != uid:
		unix.Close(fd)
		return -1, fmt.Errorf("file transfer directory %s is owned by uid %d, not by boxd (uid %d) (%s)", dir, st.Uid, uid, dirFix)
	case st.Mode&0o022 != 0:
		unix.Close(fd)
		return -1, fmt.Errorf("file transfer directory %s is writable by group or others (mode %04o) (%s)", dir, st.Mode&0o777, dirFix)
	}
	return fd, nil
}

// NewStore opens the storage directory (see openStorageDir) and makes the connection's own
// directory in it.
func NewStore(dir string, maxBytes int) (*Store, error) {
	base, err := openStorageDir(dir)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	name := "conn-" + hex.EncodeToString(id[:])
	if err := unix.Mkdirat(base, name, 0o700); err != nil {
		unix.Close(base)
		return nil, fmt.Errorf("create connection directory in %s: %w", dir, err)
	}
	own, err := unix.Openat(base, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unlinkat(base, name, unix.AT_REMOVEDIR)
		unix.Close(base)
		return nil, fmt.Errorf("open connection directory in %s: %w", dir, err)
	}
	return &Store{maxBytes: int64(maxBytes), base: base, name: name, dir: own, owned: map[string]int64{}}, nil
}

func validKey(k string) bool {
	return k == strings.TrimSpace(k) && keyPattern.MatchString(k) && !strings.Contains(k, "..") &&
		!strings.ContainsAny(k, `/\`) && !filepath.IsAbs(k)
}

type chunk struct {
	FileKey     any `json:"file_key"`
	ChunkBase64 any `json:"chunk_base64"`
	ChunkIndex  any `json:"chunk_index"`
	ChunkAmount any `json:"chunk_amount"`
}

func asInt(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// Chunk handles one __file_chunk request.
func (s *Store) Chunk(data json.RawMessage) error {
	var c chunk
	if err := json.Unmarshal(data, &c); err != nil {
		return rpc.Errorf(rpc.ValueError, "Invalid file chunk payload")
	}
	key, _ := c.FileKey.(string)
	if !validKey(key) {
		return rpc.Errorf(rpc.ValueError, "Invalid file transfer key")
	}
	enc, _ := c.ChunkBase64.(string)
	if len(enc) > maxEncodedChunk {
		return rpc.Errorf(rpc.ValueError, "File transfer chunk exceeds the protocol limit")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		return rpc.Errorf(rpc.ValueError, "Invalid base64 file chunk: %v", err)
	}
	if len(raw) > maxChunk {
		return rpc.Errorf(rpc.ValueError, "File transfer chunk exceeds the protocol limit")
	}
	idx, ok1 := asInt(c.ChunkIndex)
	amount, ok2 := asInt(c.ChunkAmount)
	if !ok1 || !ok2 || amount <= 0 || idx < 0 || idx >= amount {
		return rpc.Errorf(rpc.ValueError, "Invalid file chunk position")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	written, owned := s.owned[key]
	if !owned && len(s.owned) >= maxKeys {
		return rpc.Errorf(rpc.ValueError, "Active file transfer capacity reached")
	}
	if idx == 0 {
		written = 0
	}
	if written+int64(len(raw)) > s.maxBytes {
		return rpc.Errorf(rpc.ValueError, "File transfer exceeds the configured size limit")
	}
	if s.closed {
		return rpc.Errorf(rpc.ValueError, "File transfer is not available on this connection")
	}
	f, err := s.open(key, idx == 0 || !owned)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(raw); err != nil {
		return fmt.Errorf("write transfer file %s: %w", key, err)
	}
	s.owned[key] = written + int64(len(raw))
	return nil
}

// open opens key's file in the connection's directory for appending; fresh replaces it by a
// new file (the first chunk), created exclusively and never through a symbolic link.
func (s *Store) open(key string, fresh bool) (*os.File, error) {
	flags := unix.O_WRONLY | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if fresh {
		if err := unix.Unlinkat(s.dir, key, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("replace transfer file %s: %w", key, err)
		}
		flags |= unix.O_CREAT | unix.O_EXCL
	}
	fd, err := unix.Openat(s.dir, key, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open transfer file %s: %w", key, err)
	}
	return os.NewFile(uintptr(fd), key), nil
}

// Take reads a completed transfer of this connection and deletes it (consuming actions, e.g.
// skill zip installs).
func (s *Store) Take(key string) ([]byte, error) {
	if !validKey(key) {
		return nil, rpc.Errorf(rpc.ValueError, "Invalid file transfer key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	notFound := rpc.Errorf(rpc.ValueError, "File transfer %s not found", key)
	if _, owned := s.owned[key]; !owned || s.closed {
		return nil, notFound
	}
	delete(s.owned, key)
	defer func() { _ = unix.Unlinkat(s.dir, key, 0) }()
	fd, err := unix.Openat(s.dir, key, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, notFound
	}
	f := os.NewFile(uintptr(fd), key)
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, notFound
	}
	if st.Size() > s.maxBytes {
		return nil, rpc.Errorf(rpc.ValueError, "File transfer exceeds the configured size limit")
	}
	data, err := io.ReadAll(io.LimitReader(f, s.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read transfer file %s: %w", key, err)
	}
	return data, nil
}

// Close deletes every file the connection still owns, and its directory.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for k := range s.owned {
		_ = unix.Unlinkat(s.dir, k, 0)
	}
	s.owned = map[string]int64{}
	unix.Close(s.dir)
	_ = unix.Unlinkat(s.base, s.name, unix.AT_REMOVEDIR)
	unix.Close(s.base)
}

type ctxKey struct{}

// WithStore attaches a connection's store to its request context.
func WithStore(ctx context.Context, s *Store) context.Context {
	return context.WithValue(ctx, ctxKey{}, s)
}

// FromContext returns the connection's store, or nil.
func FromContext(ctx context.Context) *Store {
	s, _ := ctx.Value(ctxKey{}).(*Store)
	return s
}
