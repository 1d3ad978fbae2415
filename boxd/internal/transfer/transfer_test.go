package transfer

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func chunkJSON(key, data string, idx, amount any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"file_key": key, "chunk_base64": base64.StdEncoding.EncodeToString([]byte(data)), "chunk_index": idx, "chunk_amount": amount, "file_length": 0, "chunk_size": 0})
	return b
}

func TestChunksAssembleAndCleanUp(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, 10)
	require.NoError(t, err)
	require.NoError(t, s.Chunk(chunkJSON("abc-1.zip", "hello", 0, 2)))
	require.NoError(t, s.Chunk(chunkJSON("abc-1.zip", "world", 1, 2)))
	assert.EqualError(t, s.Chunk(chunkJSON("abc-1.zip", "!", 1, 2)), "ValueError: File transfer exceeds the configured size limit")
	require.NoError(t, s.Chunk(chunkJSON("other.zip", "x", 0, 1)))
	got, err := s.Take("abc-1.zip")
	require.NoError(t, err)
	assert.Equal(t, "helloworld", string(got))
	_, err = os.Stat(filepath.Join(dir, "abc-1.zip"))
	assert.True(t, os.IsNotExist(err), "taken files are deleted")
	s.Close()
	_, err = os.Stat(filepath.Join(dir, "other.zip"))
	assert.True(t, os.IsNotExist(err), "files still owned are deleted when the connection closes")
}

func TestChunkValidation(t *testing.T) {
	s, err := NewStore(t.TempDir(), 1<<20)
	require.NoError(t, err)
	cases := map[string]json.RawMessage{
		"ValueError: Invalid file transfer key":                      chunkJSON("../x", "a", 0, 1),
		"ValueError: Invalid file transfer key ":                     chunkJSON(" x", "a", 0, 1),
		"ValueError: Invalid file transfer key  ":                    chunkJSON("a..b", "a", 0, 1),
		"ValueError: Invalid file chunk position":                    chunkJSON("k", "a", 1, 1),
		"ValueError: Invalid file chunk position ":                   chunkJSON("k", "a", true, 1),
		"ValueError: Invalid file chunk position  ":                  chunkJSON("k", "a", 0, 0),
		"ValueError: File transfer chunk exceeds the protocol limit": chunkJSON("k", strings.Repeat("a", 16385), 0, 1),
	}
	for want, in := range cases {
		assert.EqualError(t, s.Chunk(in), strings.TrimSpace(want), string(in))
	}
	for i := 0; i < 128; i++ {
		require.NoError(t, s.Chunk(chunkJSON(fmt.Sprintf("k%d", i), "a", 0, 1)))
	}
	assert.EqualError(t, s.Chunk(chunkJSON("one-too-many", "a", 0, 1)), "ValueError: Active file transfer capacity reached")
}
