package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Skill-store locks are per tenant (issue #10 item 6): a tenant holding its lock never keeps
// another tenant out, and a waiter whose context ends gets an error instead of waiting on.
func TestSkillLocksArePerTenant(t *testing.T) {
	var s skillService
	unlockA, err := s.lock(context.Background(), "ws-a")
	require.NoError(t, err)
	unlockB, err := s.lock(context.Background(), "ws-b")
	require.NoError(t, err, "another tenant is not held up")
	unlockB()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.lock(ctx, "ws-a")
	assert.ErrorContains(t, err, "skill action cancelled while waiting for this Workspace's skill store")

	unlockA()
	unlockA, err = s.lock(ctx, "ws-a")
	require.NoError(t, err, "a free lock is taken even with an ended context")
	unlockA()
	assert.Empty(t, s.locks, "no lock is kept once nobody holds or waits for it")
}
