package admission

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// recorder is a Sessions that records drops.
type recorder struct {
	mu    sync.Mutex
	drops []string // "<workspace>|<keep>"
}

func (r *recorder) DropWorkspace(_ context.Context, k Key, keep string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drops = append(r.drops, k.Workspace+"|"+keep)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.drops
	r.drops = nil
	return out
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 8, 21, 10, 0, 0, 0, time.UTC)

// readyProbes make readiness pass (what an nsjail host would report), so the grant rules
// behind readiness can be tested.
func readyProbes(t *testing.T) Probes {
	dir := t.TempDir()
	ws := filepath.Join(dir, "default")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	return Probes{BackendName: "nsjail", BackendAvailable: func(context.Context) bool { return true },
		CgroupV2: func(context.Context) (bool, error) { return true, nil }, UnsafeSoftStorageLimits: true,
		StrictIsolation: func(context.Context, string) (map[string]bool, error) {
			return map[string]bool{"namespace_isolation": true, "mount_isolation": true, "network_isolation": true}, nil
		},
		Paths: func() config.Paths { return config.Paths{DefaultWorkspace: ws, AllowedMountRoots: []string{dir}} }}
}

type fixture struct {
	c     *Controller
	clk   *clock
	rec   *recorder
	limit int
}

func newFixture(t *testing.T, probes Probes, section map[string]any) *fixture {
	f := &fixture{clk: &clock{t: t0}, rec: &recorder{}, limit: 100}
	f.c = New(Options{Sessions: f.rec, Probes: probes, MaxRecords: func() int { return f.limit },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: f.clk.now})
	if section != nil {
		f.c.Configure(map[string]any{"admission": section})
	}
	return f
}

func grant(ws string, gen, rev int, ttl time.Duration, sessions, procs int) Grant {
	return Grant{Instance: "instance-a", Workspace: ws, ExecutionGeneration: gen, EntitlementRevision: rev,
		ExpiresAt: t0.Add(ttl), MaxSessions: sessions, MaxManagedProcesses: procs}
}

func TestConfigure(t *testing.T) {
	f := newFixture(t, Probes{}, nil)
	p, cerr := f.c.Policy()
	assert.False(t, p.Required)
	assert.Empty(t, cerr)

	f.c.Configure(map[string]any{"admission": map[string]any{"required": false, "bogus": 1}})
	p, cerr = f.c.Policy()
	assert.True(t, p.Required, "an invalid section fails closed")
	assert.Equal(t, "1 validation error for SandboxAdmissionPolicy\nbogus\n  Extra inputs are not permitted", cerr)

	f.c.Configure(map[string]any{"admission": map[string]any{"required": true}})
	p, cerr = f.c.Policy()
	assert.True(t, p.Required)
	assert.Empty(t, cerr)

	for _, cfg := range []map[string]any{{"admission": map[string]any{"required": false}}, {}, {"admission": nil}} {
		f.c.Configure(cfg)
		p, cerr = f.c.Policy()
		assert.True(t, p.Required, "%v", cfg)
		assert.Equal(t, "Sandbox admission enforcement cannot be disabled without restarting the Box Runtime", cerr)
	}
}

func TestStandardModeRefuses(t *testing.T) {
	f := newFixture(t, Probes{}, nil)
	_, err := f.c.Upsert(context.Background(), grant("w", 1, 1, time.Minute, 1, 0))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission enforcement is not enabled")
	_, err = f.c.Revoke(context.Background(), Revocation{Instance: "instance-a", Workspace: "w", EntitlementRevision: 1})
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission enforcement is not enabled")
	_, err = f.c.Require(tenancy.Context{Instance: "instance-a", Workspace: "w", Generation: 1})
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission enforcement is not enabled")
}

func TestUpsertRules(t *testing.T) {
	ctx := context.Background()
	type step struct {
		g    Grant
		want string // error, "" = installed
	}
	cases := []struct {
		name    string
		section map[string]any
		limit   int
		steps   []step
	}{
		{name: "config error", section: map[string]any{"required": true, "max_sessions": 5},
			steps: []step{{grant("w", 1, 1, time.Minute, 1, 0), "BoxReadinessError: Invalid sandbox admission configuration: 1 validation error for SandboxAdmissionPolicy\nmax_sessions\n  Value error, max_sessions must be between 0 and 1"}}},
		{name: "expired", steps: []step{{grant("w", 1, 1, 0, 1, 0), "BoxAdmissionError: Cannot install an expired sandbox admission grant"}}},
		{name: "too long", steps: []step{{grant("w", 1, 1, 301*time.Second, 1, 0), "BoxAdmissionError: Sandbox admission grant lifetime exceeds the configured maximum"}}},
		{name: "max ttl ok", steps: []step{{grant("w", 1, 1, 300*time.Second, 1, 0), ""}}},
		{name: "session cap", steps: []step{{grant("w", 1, 1, time.Minute, 2, 0), "BoxAdmissionError: Sandbox admission grant exceeds the session cap"}}},
		{name: "process cap", steps: []step{{grant("w", 1, 1, time.Minute, 1, 1), "BoxAdmissionError: Sandbox admission grant exceeds the managed-process cap"}}},
		{name: "record capacity", limit: 1, steps: []step{
			{grant("w1", 1, 1, time.Minute, 1, 0), ""},
			{grant("w1", 1, 1, 2*time.Minute, 1, 0), ""},
			{grant("w2", 1, 1, time.Minute, 1, 0), "BoxAdmissionError: Sandbox admission record capacity reached; refusing an unbounded Workspace fence allocation"},
		}},
		{name: "stale revision", steps: []step{
			{grant("w", 1, 5, time.Minute, 1, 0), ""},
			{grant("w", 1, 4, time.Minute, 1, 0), "BoxAdmissionError: Sandbox admission grant revision is stale"},
		}},
		{name: "stale generation", steps: []step{
			{grant("w", 3, 1, time.Minute, 1, 0), ""},
			{grant("w", 2, 2, time.Minute, 1, 0), "BoxAdmissionError: Sandbox admission execution generation is stale"},
		}},
		{name: "limits changed", steps: []step{
			{grant("w", 1, 1, time.Minute, 1, 0), ""},
			{grant("w", 1, 1, time.Minute, 0, 0), "BoxAdmissionError: Sandbox admission limits changed without a new entitlement revision"},
			{grant("w", 1, 2, time.Minute, 0, 0), ""},
		}},
		{name: "revision order before generation", steps: []step{
			{grant("w", 3, 5, time.Minute, 1, 0), ""},
			{grant("w", 2, 4, time.Minute, 1, 0), "BoxAdmissionError: Sandbox admission grant revision is stale"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			section := tc.section
			if section == nil {
				section = map[string]any{"required": true}
			}
			f := newFixture(t, Probes{}, section)
			if tc.limit > 0 {
				f.limit = tc.limit
			}
			for i, s := range tc.steps {
				receipt, err := f.c.Upsert(ctx, s.g)
				if s.want != "" {
					require.Error(t, err, "step %d", i)
					assert.Equal(t, s.want, err.Error(), "step %d", i)
					continue
				}
				require.NoError(t, err, "step %d", i)
				assert.Equal(t, s.g.Receipt(), receipt, "step %d", i)
			}
		})
	}
}

func TestUpsertDropsAndIdempotence(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Probes{}, map[string]any{"required": true})
	canonical := func(gen int) string {
		p, err := tenancy.Context{Instance: "instance-a", Workspace: "w", Generation: gen}.Physical("global")
		require.NoError(t, err)
		return p
	}
	// First grant: every session of the workspace goes.
	_, err := f.c.Upsert(ctx, grant("w", 1, 1, time.Minute, 1, 0))
	require.NoError(t, err)
	assert.Equal(t, []string{"w|"}, f.rec.take())

	// Renewal in the same generation keeps the canonical session.
	_, err = f.c.Upsert(ctx, grant("w", 1, 1, 2*time.Minute, 1, 0))
	require.NoError(t, err)
	assert.Equal(t, []string{"w|" + canonical(1)}, f.rec.take())

	// A shorter duplicate is idempotent: the receipt shows the grant in force, nothing dropped.
	receipt, err := f.c.Upsert(ctx, grant("w", 1, 1, 90*time.Second, 1, 0))
	require.NoError(t, err)
	assert.Equal(t, "2026-08-21T10:02:00+00:00", receipt["expires_at"])
	assert.Empty(t, f.rec.take())

	// A new generation drops everything.
	_, err = f.c.Upsert(ctx, grant("w", 2, 1, time.Minute, 1, 0))
	require.NoError(t, err)
	assert.Equal(t, []string{"w|"}, f.rec.take())

	// max_sessions 0 (new revision) drops everything too.
	_, err = f.c.Upsert(ctx, grant("w", 2, 2, time.Minute, 0, 0))
	require.NoError(t, err)
	assert.Equal(t, []string{"w|"}, f.rec.take())
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Probes{}, map[string]any{"required": true})
	_, err := f.c.Upsert(ctx, grant("w", 1, 3, time.Minute, 1, 0))
	require.NoError(t, err)
	f.rec.take()

	cases := []struct {
		rev  int
		want string
	}{
		{2, "BoxAdmissionError: Sandbox admission revocation is stale"},
		{3, ""},
		{3, ""}, // repeating the same revocation is allowed
		{2, "BoxAdmissionError: Sandbox admission revocation is stale"},
	}
	for i, tc := range cases {
		out, err := f.c.Revoke(ctx, Revocation{Instance: "instance-a", Workspace: "w", EntitlementRevision: tc.rev})
		if tc.want != "" {
			require.Error(t, err, "step %d", i)
			assert.Equal(t, tc.want, err.Error())
			continue
		}
		require.NoError(t, err, "step %d", i)
		assert.Equal(t, map[string]any{"revoked": true, "workspace_uuid": "w", "entitlement_revision": tc.rev}, out)
		assert.Equal(t, []string{"w|"}, f.rec.take())
	}
	_, err = f.c.Upsert(ctx, grant("w", 1, 3, time.Minute, 1, 0))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission grant revision was revoked")
	_, err = f.c.Upsert(ctx, grant("w", 1, 4, time.Minute, 1, 0))
	assert.NoError(t, err)

	f.limit = 1
	_, err = f.c.Revoke(ctx, Revocation{Instance: "instance-a", Workspace: "other", EntitlementRevision: 1})
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission record capacity reached; refusing an unbounded Workspace fence allocation")
}

func TestCheckAndExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, readyProbes(t), map[string]any{"required": true})
	tctx := func(ws string, gen int) tenancy.Context {
		return tenancy.Context{Instance: "instance-a", Workspace: ws, Generation: gen}
	}
	_, err := f.c.Check(ctx, tctx("w", 1))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission grant is missing")

	_, err = f.c.Upsert(ctx, grant("w", 2, 1, time.Minute, 1, 0))
	require.NoError(t, err)
	_, err = f.c.Upsert(ctx, grant("zero", 1, 1, time.Minute, 0, 0))
	require.NoError(t, err)
	f.rec.take()

	cases := []struct {
		ctx  tenancy.Context
		want string
	}{
		{tctx("w", 2), ""},
		{tctx("w", 1), "BoxAdmissionError: Sandbox admission grant belongs to another execution generation"},
		{tctx("zero", 1), "BoxAdmissionError: Sandbox admission grant does not permit sessions"},
		{tctx("nobody", 1), "BoxAdmissionError: Sandbox admission grant is missing"},
	}
	for _, tc := range cases {
		g, err := f.c.Check(ctx, tc.ctx)
		if tc.want != "" {
			require.Error(t, err, "%+v", tc.ctx)
			assert.Equal(t, tc.want, err.Error())
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, 2, g.ExecutionGeneration)
	}

	// Lowering the policy under an installed grant: the grant exceeds it.
	f.c.Configure(map[string]any{"admission": map[string]any{"required": true, "max_sessions": 0}})
	_, err = f.c.Require(tctx("w", 2))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission grant exceeds the active runtime policy")
	f.c.Configure(map[string]any{"admission": map[string]any{"required": true}})

	// Expiry: the grant is refused at its deadline, then reaped with its sessions.
	f.clk.advance(time.Minute)
	_, err = f.c.Require(tctx("w", 2))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission grant has expired")
	f.c.Reap(ctx)
	assert.ElementsMatch(t, []string{"w|", "zero|"}, f.rec.take())
	_, err = f.c.Check(ctx, tctx("w", 2))
	assert.EqualError(t, err, "BoxAdmissionError: Sandbox admission grant is missing")

	// A renewed grant is not reaped by the entry of the grant it replaced.
	_, err = f.c.Upsert(ctx, Grant{Instance: "instance-a", Workspace: "r", ExecutionGeneration: 1, EntitlementRevision: 1, ExpiresAt: f.clk.now().Add(10 * time.Second), MaxSessions: 1})
	require.NoError(t, err)
	_, err = f.c.Upsert(ctx, Grant{Instance: "instance-a", Workspace: "r", ExecutionGeneration: 1, EntitlementRevision: 1, ExpiresAt: f.clk.now().Add(100 * time.Second), MaxSessions: 1})
	require.NoError(t, err)
	f.rec.take()
	f.clk.advance(20 * time.Second)
	f.c.Reap(ctx)
	assert.Empty(t, f.rec.take())
	_, err = f.c.Check(ctx, tctx("r", 1))
	assert.NoError(t, err)
}

func TestSessionCapAndLogicalSession(t *testing.T) {
	g := Grant{MaxSessions: 1}
	cases := []struct {
		existing int
		exists   bool
		want     string
	}{
		{0, false, ""},
		{1, true, ""},
		{1, false, "BoxAdmissionError: Sandbox admission session limit reached"},
		{2, true, "BoxAdmissionError: Sandbox admission session limit exceeded"},
	}
	for _, tc := range cases {
		err := SessionCap(g, tc.existing, tc.exists)
		if tc.want == "" {
			assert.NoError(t, err)
		} else {
			assert.EqualError(t, err, tc.want)
		}
	}
	id, err := LogicalSession(DefaultPolicy(), " global ")
	require.NoError(t, err)
	assert.Equal(t, "global", id)
	_, err = LogicalSession(DefaultPolicy(), "person_1")
	assert.EqualError(t, err, "BoxAdmissionError: Managed sandbox session_id is runtime-owned")
}
