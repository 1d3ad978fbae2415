package admission

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// Error texts of §7.5 (class BoxAdmissionError unless noted).
const (
	msgNotEnabled        = "Sandbox admission enforcement is not enabled"
	msgCannotDisable     = "Sandbox admission enforcement cannot be disabled without restarting the Box Runtime"
	msgExpiredInstall    = "Cannot install an expired sandbox admission grant"
	msgLifetime          = "Sandbox admission grant lifetime exceeds the configured maximum"
	msgSessionCap        = "Sandbox admission grant exceeds the session cap"
	msgProcessCap        = "Sandbox admission grant exceeds the managed-process cap"
	msgRecordCapacity    = "Sandbox admission record capacity reached; refusing an unbounded Workspace fence allocation"
	msgRevisionRevoked   = "Sandbox admission grant revision was revoked"
	msgRevisionStale     = "Sandbox admission grant revision is stale"
	msgGenerationStale   = "Sandbox admission execution generation is stale"
	msgLimitsChanged     = "Sandbox admission limits changed without a new entitlement revision"
	msgRevocationStale   = "Sandbox admission revocation is stale"
	msgGrantMissing      = "Sandbox admission grant is missing"
	msgGrantExpired      = "Sandbox admission grant has expired"
	msgOtherGeneration   = "Sandbox admission grant belongs to another execution generation"
	msgNoSessions        = "Sandbox admission grant does not permit sessions"
	msgExceedsPolicy     = "Sandbox admission grant exceeds the active runtime policy"
	MsgGrantMismatch     = "Sandbox admission grant does not match the trusted instance"
	MsgRevokeMismatch    = "Sandbox admission revocation does not match the trusted instance"
	MsgNoProcesses       = "Sandbox admission grant does not permit managed processes"
	MsgNoRelay           = "Sandbox admission grant does not permit managed process relay"
	MsgSessionOwned      = "Managed sandbox session_id is runtime-owned"
	MsgSessionLimitReach = "Sandbox admission session limit reached"
	MsgSessionLimitExcd  = "Sandbox admission session limit exceeded"
)

// Sessions is the part of the session table the controller drops sessions from.
type Sessions interface {
	// DropWorkspace drops every session of the workspace k (all generations) except the
	// physical id keep ("" = none), and returns when they are cleaned up.
	DropWorkspace(ctx context.Context, k Key, keep string)
}

// Options wire a controller.
type Options struct {
	Sessions Sessions
	Probes   Probes
	// MaxRecords is limits.max_admission_records, read at every decision.
	MaxRecords func() int
	Logger     *slog.Logger
	// Now is the clock (tests inject one); nil = time.Now.
	Now func() time.Time
}

// Controller holds the admission policy and every workspace's grant state. It is safe for
// concurrent use; sessions are dropped outside its lock.
type Controller struct {
	opts Options

	mu          sync.Mutex
	policy      Policy
	configErr   string
	grants      map[Key]Grant
	revisions   map[Key]int // highest entitlement revision seen
	generations map[Key]int // highest execution generation seen
	limits      map[Key][2]int
	revoked     map[Key]int
	expiry      expiryHeap

	readyMu    sync.Mutex
	readyAt    time.Time
	readyCache *Readiness
}

// New builds a controller with the default (not required) policy.
func New(opts Options) *Controller {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{opts: opts, policy: DefaultPolicy(), grants: map[Key]Grant{}, revisions: map[Key]int{},
		generations: map[Key]int{}, limits: map[Key][2]int{}, revoked: map[Key]int{}}
}

// Configure recomputes the policy from the effective configuration (§5.1 step 3, §7.5.1):
// a missing section is the default; an invalid one is fail-closed (required, with the
// error recorded); once required, a configuration that would disable it keeps the previous
// policy and records an error instead. The readiness cache is cleared.
func (c *Controller) Configure(cfg map[string]any) {
	c.mu.Lock()
	prev := c.policy
	section, has := cfg["admission"]
	switch p, err := ParsePolicy(section); {
	case !has || section == nil:
		c.policy, c.configErr = DefaultPolicy(), ""
	case err != nil:
		c.policy = DefaultPolicy()
		c.policy.Required = true
		c.configErr = err.Error()
	default:
		c.policy, c.configErr = p, ""
	}
	if prev.Required && !c.policy.Required {
		c.policy = prev
		c.configErr = msgCannotDisable
	}
	required, cerr := c.policy.Required, c.configErr
	c.mu.Unlock()
	c.clearReadiness()
	if cerr != "" {
		c.opts.Logger.Error("Invalid sandbox admission configuration: " + cerr)
	} else if required {
		c.opts.Logger.Info("LangBot Box sandbox admission enforcement enabled")
	}
}

// Required reports whether grant-enforced mode is on.
func (c *Controller) Required() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policy.Required
}

// Policy returns the active policy and the recorded configuration error ("" = none).
func (c *Controller) Policy() (Policy, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policy, c.configErr
}

type dropReq struct {
	key  Key
	keep string
}

func (c *Controller) runDrops(ctx context.Context, drops []dropReq) {
	if c.opts.Sessions == nil {
		return
	}
	for _, d := range drops {
		c.opts.Sessions.DropWorkspace(context.WithoutCancel(ctx), d.key, d.keep)
	}
}

func admissionErr(msg string) error { return rpc.Errorf(rpc.BoxAdmissionError, "%s", msg) }

func (c *Controller) newKeyOverCapacity(k Key) bool {
	_, known := c.revisions[k]
	return !known && c.opts.MaxRecords != nil && len(c.revisions) >= c.opts.MaxRecords()
}

// Upsert installs or renews a grant with the rules of §7.5.2, in their order. The caller
// has validated the model and the instance; it observes the generation fence afterwards.
func (c *Controller) Upsert(ctx context.Context, g Grant) (map[string]any, error) {
	c.mu.Lock()
	if !c.policy.Required {
		c.mu.Unlock()
		return nil, admissionErr(msgNotEnabled)
	}
	if c.configErr != "" {
		err := c.configErr
		c.mu.Unlock()
		return nil, rpc.Errorf(rpc.BoxReadinessError, "Invalid sandbox admission configuration: %s", err)
	}
	policy := c.policy
	now := c.opts.Now()
	var fail string
	switch {
	case g.Expired(now):
		fail = msgExpiredInstall
	case g.ExpiresAt.After(now.Add(time.Duration(policy.MaxGrantTTLSec) * time.Second)):
		fail = msgLifetime
	case g.MaxSessions > policy.MaxSessions:
		fail = msgSessionCap
	case g.MaxManagedProcesses > policy.MaxManagedProcesses:
		fail = msgProcessCap
	}
	if fail != "" {
		c.mu.Unlock()
		return nil, admissionErr(fail)
	}
	drops := c.reapLocked(now)
	k := g.Key()
	limits := [2]int{g.MaxSessions, g.MaxManagedProcesses}
	prevLimits, hadLimits := c.limits[k]
	switch {
	case c.newKeyOverCapacity(k):
		fail = msgRecordCapacity
	case g.EntitlementRevision <= c.revoked[k]:
		fail = msgRevisionRevoked
	case g.EntitlementRevision < c.revisions[k]:
		fail = msgRevisionStale
	case g.ExecutionGeneration < c.generations[k]:
		fail = msgGenerationStale
	case g.EntitlementRevision == c.revisions[k] && hadLimits && prevLimits != limits:
		fail = msgLimitsChanged
	}
	if fail != "" {
		c.mu.Unlock()
		c.runDrops(ctx, drops)
		return nil, admissionErr(fail)
	}
	installed := g
	current, hasCurrent := c.grants[k]
	if hasCurrent && g.EntitlementRevision == current.EntitlementRevision &&
		g.ExecutionGeneration == current.ExecutionGeneration && g.ExpiresAt.Before(current.ExpiresAt) {
		// A shorter duplicate renewal (another Core replica's clock) is idempotent.
		installed = current
	} else {
		c.grants[k] = g
		heap.Push(&c.expiry, expiryEntry{at: g.ExpiresAt, key: k, rev: g.EntitlementRevision, gen: g.ExecutionGeneration})
		c.compactLocked()
		c.revisions[k] = g.EntitlementRevision
		c.generations[k] = g.ExecutionGeneration
		c.limits[k] = limits
		keep := ""
		if hasCurrent && current.ExecutionGeneration == g.ExecutionGeneration && g.MaxSessions != 0 {
			keep = canonicalSession(g, policy)
		}
		drops = append(drops, dropReq{key: k, keep: keep})
	}
	c.mu.Unlock()
	c.runDrops(ctx, drops)
	c.opts.Logger.Info(fmt.Sprintf("LangBot Box sandbox admission grant installed: namespace=%s execution_generation=%d entitlement_revision=%d expires_at=%s",
		tenancy.Namespace(k.Instance, k.Workspace), installed.ExecutionGeneration, installed.EntitlementRevision, pyval.IsoFormat(installed.ExpiresAt)))
	return installed.Receipt(), nil
}

// canonicalSession is the physical id of the policy's logical session in the grant's placement.
func canonicalSession(g Grant, p Policy) string {
	phys, _ := tenancy.Context{Instance: g.Instance, Workspace: g.Workspace, Generation: g.ExecutionGeneration}.Physical(p.LogicalSessionID)
	return phys
}

// Revoke applies a revocation (§7.5.2) and drops all of the workspace's sessions.
func (c *Controller) Revoke(ctx context.Context, r Revocation) (map[string]any, error) {
	c.mu.Lock()
	if !c.policy.Required {
		c.mu.Unlock()
		return nil, admissionErr(msgNotEnabled)
	}
	k := r.Key()
	if c.newKeyOverCapacity(k) {
		c.mu.Unlock()
		return nil, admissionErr(msgRecordCapacity)
	}
	highest, revoked := c.revisions[k], c.revoked[k]
	if r.EntitlementRevision < max(highest, revoked) {
		c.mu.Unlock()
		return nil, admissionErr(msgRevocationStale)
	}
	delete(c.grants, k)
	c.revisions[k] = max(highest, r.EntitlementRevision)
	c.revoked[k] = max(revoked, r.EntitlementRevision)
	c.mu.Unlock()
	c.runDrops(ctx, []dropReq{{key: k}})
	c.opts.Logger.Info(fmt.Sprintf("LangBot Box sandbox admission grant revoked: namespace=%s entitlement_revision=%d",
		tenancy.Namespace(k.Instance, k.Workspace), r.EntitlementRevision))
	return map[string]any{"revoked": true, "workspace_uuid": r.Workspace, "entitlement_revision": r.EntitlementRevision}, nil
}

// Reap removes expired grants and drops their workspaces' sessions (the lazy checks call it,
// and the session reaper's loop, see session.Manager.RunReaper).
func (c *Controller) Reap(ctx context.Context) {
	c.mu.Lock()
	drops := c.reapLocked(c.opts.Now())
	c.mu.Unlock()
	c.runDrops(ctx, drops)
}

func (c *Controller) reapLocked(now time.Time) []dropReq {
	var drops []dropReq
	for c.expiry.Len() > 0 && !c.expiry[0].at.After(now) {
		e := heap.Pop(&c.expiry).(expiryEntry)
		g, ok := c.grants[e.key]
		if !ok || !g.ExpiresAt.Equal(e.at) || g.EntitlementRevision != e.rev || g.ExecutionGeneration != e.gen || !g.Expired(now) {
			continue // replaced or renewed: a newer entry owns it
		}
		delete(c.grants, e.key)
		drops = append(drops, dropReq{key: e.key})
		c.opts.Logger.Info(fmt.Sprintf("LangBot Box sandbox admission grant expired: namespace=%s entitlement_revision=%d",
			tenancy.Namespace(e.key.Instance, e.key.Workspace), g.EntitlementRevision))
	}
	return drops
}

// compactLocked rebuilds the expiry queue when superseded entries dominate it.
func (c *Controller) compactLocked() {
	if c.expiry.Len() <= 2*len(c.grants)+1024 {
		return
	}
	c.expiry = c.expiry[:0]
	for k, g := range c.grants {
		c.expiry = append(c.expiry, expiryEntry{at: g.ExpiresAt, key: k, rev: g.EntitlementRevision, gen: g.ExecutionGeneration})
	}
	heap.Init(&c.expiry)
}

// Check is the admission check of sandbox actions and relays (§7.5.4): readiness, then the
// workspace's grant. It returns the grant in force. Call it only when Required.
func (c *Controller) Check(ctx context.Context, tctx tenancy.Context) (Grant, error) {
	r := c.Readiness(ctx)
	if !r.Ready {
		detail := strings.Join(r.Failed(), ", ")
		if detail == "" {
			detail = "unknown"
		}
		return Grant{}, rpc.Errorf(rpc.BoxReadinessError, "Managed sandbox isolation is not ready (failed checks: %s)", detail)
	}
	c.Reap(ctx)
	return c.Require(tctx)
}

// Require checks the grant of tctx's workspace without readiness (§7.5.4, in order).
func (c *Controller) Require(tctx tenancy.Context) (Grant, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.policy.Required {
		return Grant{}, admissionErr(msgNotEnabled)
	}
	if c.configErr != "" {
		return Grant{}, rpc.Errorf(rpc.BoxReadinessError, "Invalid sandbox admission configuration: %s", c.configErr)
	}
	g, ok := c.grants[Key{tctx.Instance, tctx.Workspace}]
	switch {
	case !ok:
		return Grant{}, admissionErr(msgGrantMissing)
	case g.Expired(c.opts.Now()):
		return Grant{}, admissionErr(msgGrantExpired)
	case g.ExecutionGeneration != tctx.Generation:
		return Grant{}, admissionErr(msgOtherGeneration)
	case g.MaxSessions <= 0:
		return Grant{}, admissionErr(msgNoSessions)
	case g.MaxSessions > c.policy.MaxSessions || g.MaxManagedProcesses > c.policy.MaxManagedProcesses:
		return Grant{}, admissionErr(msgExceedsPolicy)
	}
	return g, nil
}

// SessionCap applies the per-workspace session cap of a grant (§7.5.4): existing is the
// number of the workspace's sessions, exists whether the target session is one of them.
func SessionCap(g Grant, existing int, exists bool) error {
	if existing > g.MaxSessions {
		return admissionErr(MsgSessionLimitExcd)
	}
	if !exists && existing >= g.MaxSessions {
		return admissionErr(MsgSessionLimitReach)
	}
	return nil
}

// LogicalSession enforces the runtime-owned session id of get/delete/process actions:
// the logical id (trimmed) must be the policy's.
func LogicalSession(p Policy, logical string) (string, error) {
	if strings.TrimSpace(logical) != p.LogicalSessionID {
		return "", admissionErr(MsgSessionOwned)
	}
	return p.LogicalSessionID, nil
}

type expiryEntry struct {
	at       time.Time
	key      Key
	rev, gen int
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
