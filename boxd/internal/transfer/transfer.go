// Package transfer implements the RPC file transfer of §3.7 (`__file_chunk`): chunks are
// appended to a private file per key; keys are owned by the connection that wrote them and
// deleted when it closes, or when a consuming action takes the file.
package transfer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

const (
	maxEncodedChunk = 21848
	maxChunk        = 16384
	maxKeys         = 128
)

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// Store holds one connection's transfers.
type Store struct {
	dir      string
	maxBytes int64 // snapshot of limits.max_rpc_file_bytes at connection time

	mu    sync.Mutex
	owned map[string]int64 // key -> bytes written
}

// DefaultDir is LANGBOT_PLUGIN_FILE_STORAGE_DIR, else <tmp>/lbp-rpc (boxd runs with a
// read-only root file system, so the Python default data/temp/lbp under the CWD is not used).
func DefaultDir() string {
	if d := os.Getenv("LANGBOT_PLUGIN_FILE_STORAGE_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "lbp-rpc")
}

// NewStore creates the storage directory (mode 0700).
func NewStore(dir string, maxBytes int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create file transfer directory %s: %w", dir, err)
	}
	return &Store{dir: dir, maxBytes: int64(maxBytes), owned: map[string]int64{}}, nil
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
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if idx == 0 {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(filepath.Join(s.dir, key), flags, 0o600)
	if err != nil {
		return fmt.Errorf("open transfer file %s: %w", key, err)
	}
	defer f.Close()
	if _, err := f.Write(raw); err != nil {
		return fmt.Errorf("write transfer file %s: %w", key, err)
	}
	s.owned[key] = written + int64(len(raw))
	return nil
}

// Take reads a completed transfer and deletes it (consuming actions, e.g. skill zip installs).
func (s *Store) Take(key string) ([]byte, error) {
	if !validKey(key) {
		return nil, rpc.Errorf(rpc.ValueError, "Invalid file transfer key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := filepath.Join(s.dir, key)
	defer os.Remove(p)
	delete(s.owned, key)
	st, err := os.Stat(p)
	if err != nil {
		return nil, rpc.Errorf(rpc.ValueError, "File transfer %s not found", key)
	}
	if st.Size() > s.maxBytes {
		return nil, rpc.Errorf(rpc.ValueError, "File transfer exceeds the configured size limit")
	}
	return os.ReadFile(p)
}

// Close deletes every file the connection still owns.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.owned {
		_ = os.Remove(filepath.Join(s.dir, k))
	}
	s.owned = map[string]int64{}
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
