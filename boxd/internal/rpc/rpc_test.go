package rpc

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResponses(t *testing.T) {
	b, err := json.Marshal(Success(json.RawMessage("41873"), map[string]any{"a": 1}))
	require.NoError(t, err)
	assert.JSONEq(t, `{"seq_id":41873,"code":0,"message":"success","data":{"a":1},"chunk_status":"continue"}`, string(b))

	b, err = json.Marshal(Failure(nil, Errorf(BoxSessionNotFoundError, "session %s not found", "ws-x-g1-foo")))
	require.NoError(t, err)
	assert.JSONEq(t, `{"seq_id":-1,"code":1,"message":"BoxSessionNotFoundError: session ws-x-g1-foo not found","data":{},"chunk_status":"continue"}`, string(b))
}

func TestMessage(t *testing.T) {
	assert.Equal(t, "BoxError: boom", Message(errors.New("boom")))
	assert.Equal(t, "Runtime connection is busy (max 128 concurrent actions)", Message(Busy()))
	long := Message(Errorf(ValueError, "%s", strings.Repeat("x", 5000)))
	assert.True(t, strings.HasSuffix(long, "... [protocol error truncated]"))
	assert.Len(t, long, len("ValueError: ")+4096+len("... [protocol error truncated]"))
}

func TestClassOfMessage(t *testing.T) {
	for msg, want := range map[string]string{
		"BoxValidationError: Skill name is required": "BoxValidationError",
		"KeyError: 'name'":                           "KeyError",
		"Box runtime is busy: too many requests":     "BoxError",
		"no class at all":                            "BoxError",
		": empty class":                              "BoxError",
	} {
		assert.Equal(t, want, ClassOfMessage(msg), msg)
	}
}
