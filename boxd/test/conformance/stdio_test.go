//go:build integration

package conformance

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// boxd -s as LangBot spawns it: protocol lines on stdout only, responses over 16 KiB chunked
// into lines under 64 KiB, and the process exits when stdin closes.
func TestStdioControl(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "boxd")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/boxd").CombinedOutput()
	require.NoError(t, err, string(out))

	noTrust := exec.Command(bin, "-s", "--host", "127.0.0.1", "--ws-control-port", "0")
	noTrust.Env = append(os.Environ(), "LANGBOT_BOX_TRUSTED_INSTANCE_UUID=")
	msg, err := noTrust.CombinedOutput()
	require.Error(t, err, "stdio mode without a trusted instance must not start")
	assert.Contains(t, string(msg), "LANGBOT_BOX_TRUSTED_INSTANCE_UUID is required for stdio Box control")

	cmd := exec.Command(bin, "-s", "--host", "127.0.0.1", "--ws-control-port", "0")
	cmd.Env = append(os.Environ(), "LANGBOT_BOX_TRUSTED_INSTANCE_UUID="+instance, "LANGBOT_BOX_CONTROL_TOKEN="+token)
	if cfg := os.Getenv(kubeConfigEnv); cfg != "" { // the kubernetes backend's start-up configuration
		cmd.Env = append(cmd.Env, "LANGBOT_BOX_CONFIG="+cfg)
	}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	send := func(v any) {
		b, _ := json.Marshal(v)
		_, err := stdin.Write(append(b, '\n'))
		require.NoError(t, err)
	}
	// read returns the next response, reassembling chunk_start/chunk_data/chunk_end.
	read := func() map[string]any {
		var buf strings.Builder
		chunked := false
		for lines.Scan() {
			line := lines.Text()
			require.Less(t, len(line), 64<<10, "every stdout line stays under 64 KiB")
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &m), "stdout carries protocol lines only: %q", line)
			switch m["type"] {
			case "chunk_start":
				chunked = true
			case "chunk_data":
				require.Equal(t, float64(buf.Len()), m["offset"])
				buf.WriteString(m["data"].(string))
			case "chunk_end":
				var r map[string]any
				require.NoError(t, json.Unmarshal([]byte(buf.String()), &r))
				r["_chunked"] = chunked
				return r
			default:
				return m
			}
		}
		t.Fatalf("stdout closed: %v", lines.Err())
		return nil
	}
	send(map[string]any{"seq_id": 1, "action": "__ping", "data": map[string]any{}})
	r := read()
	assert.Equal(t, float64(0), r["code"])
	root := t.TempDir()
	send(map[string]any{"seq_id": 2, "action": "box_init", "data": map[string]any{"local": map[string]any{"host_root": root}}})
	assert.Equal(t, float64(0), read()["code"])
	send(map[string]any{"seq_id": 3, "action": "box_exec", "context": ctx1,
		"data": spec(uniq("stdio"), map[string]any{"cmd": "head -c 40000 /dev/zero | tr '\\0' x"})})
	r = read()
	require.Equal(t, float64(0), r["code"], r["message"])
	assert.Equal(t, true, r["_chunked"], "a response over 16 KiB is chunked")
	assert.Len(t, r["data"].(map[string]any)["stdout"], 40000)

	// A chunked request is reassembled too.
	big, _ := json.Marshal(map[string]any{"seq_id": 4, "action": "__file_chunk", "data": map[string]any{
		"file_key": "k1.zip", "chunk_base64": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("z", 16000))), "chunk_index": 0, "chunk_amount": 1}})
	send(map[string]any{"type": "chunk_start", "total_size": len(big)})
	for off := 0; off < len(big); off += 8000 {
		end := min(off+8000, len(big))
		send(map[string]any{"type": "chunk_data", "data": string(big[off:end]), "offset": off})
	}
	send(map[string]any{"type": "chunk_end"})
	r = read()
	assert.Equal(t, float64(4), r["seq_id"])
	assert.Equal(t, float64(0), r["code"], r["message"])

	require.NoError(t, stdin.Close())
	require.NoError(t, cmd.Wait(), "closing stdin ends the process cleanly")
}
