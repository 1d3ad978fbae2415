package rpc

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGateRefusesBeyondMaxInFlight(t *testing.T) {
	g := NewGate()
	req := []byte(`{"seq_id": 7, "action": "box_exec", "data": {}}`)
	for i := 0; i < MaxInFlight; i++ {
		ok, refusal := g.Enter(req)
		require.True(t, ok, "slot %d", i)
		require.Nil(t, refusal)
	}
	ok, refusal := g.Enter(req)
	assert.False(t, ok)
	require.NotNil(t, refusal)
	assert.Equal(t, json.RawMessage("7"), refusal.SeqID)
	assert.Equal(t, 1, refusal.Code)
	assert.Equal(t, "Runtime connection is busy (max 128 concurrent actions)", refusal.Message)

	ok, refusal = g.Enter([]byte(`{"seq_id": 8, "code": 0}`))
	assert.False(t, ok)
	assert.Nil(t, refusal, "a message that is not a request is dropped silently")

	g.Leave()
	ok, _ = g.Enter(req)
	assert.True(t, ok, "a slot given back is free again")
}
