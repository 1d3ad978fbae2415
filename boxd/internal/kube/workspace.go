package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// WorkspaceMode is box.kubernetes.workspace_mode.
type WorkspaceMode string

const (
	// WorkspaceShared mounts host_path and every extra mount as subPaths of the box root
	// claim: boxd, LangBot and the sandbox see the same files.
	WorkspaceShared WorkspaceMode = "shared"
	// WorkspaceIsolated gives every sandbox Pod its own emptyDir workspace; boxd copies the
	// session's trees in before each command and the rw ones back after it (internal/wsync).
	// No claim is mounted in sandbox Pods, so pre-started generic Pods (the warm pool) can
	// serve any session of their shape.
	WorkspaceIsolated WorkspaceMode = "isolated"
)

// PoolWorkspace is where a warm Pod's emptyDir workspace is mounted: LangBot's mount path.
// A session is served warm only when every one of its mounts is there or beneath it.
const PoolWorkspace = "/workspace"

// PoolShape is one entry of box.kubernetes.warm_pool: generic pre-started Pods of one image
// and resource profile (network always off), for sessions whose spec has exactly that
// profile (cpus, memory_mb and read_only_rootfs default to a BoxSpec's defaults).
type PoolShape struct {
	Image          string
	CPUs           float64
	MemoryMB       int
	ReadOnlyRootfs bool
	// Size is how many unclaimed Pods of the shape the pool keeps (starting or ready).
	Size int
	// MaxSurge is how many Pods above Size may exist while Pods older than MaxAge are
	// replaced (the replacement is created first); 0 = the old one is deleted first.
	MaxSurge int
	// RefillPerMinute bounds Pod creations of the shape: up to min(Size, RefillPerMinute) at
	// once, then RefillPerMinute per minute.
	RefillPerMinute int
	// MaxAge: an unclaimed Pod older than this is deleted and replaced.
	MaxAge time.Duration
}

// Key is what a session spec must match (image and resource profile).
func (p PoolShape) Key() string {
	b, _ := json.Marshal([]any{p.Image, p.CPUs, p.MemoryMB, p.ReadOnlyRootfs})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// wirePoolShape is the JSON shape of one warm_pool entry.
type wirePoolShape struct {
	Image           string   `json:"image"`
	CPUs            *float64 `json:"cpus"`
	MemoryMB        *int     `json:"memory_mb"`
	ReadOnlyRootfs  *bool    `json:"read_only_rootfs"`
	Size            *int     `json:"size"`
	MaxSurge        *int     `json:"max_surge"`
	RefillPerMinute *int     `json:"refill_per_minute"`
	MaxAgeSec       *int     `json:"max_age_sec"`
}

// Defaults of a warm_pool entry: the resources are the protocol's defaults of a BoxSpec
// (what LangBot sends unless configured otherwise).
const (
	DefaultPoolCPUs            = 1.0
	DefaultPoolMemoryMB        = 512
	DefaultPoolReadOnlyRootfs  = true
	DefaultPoolSize            = 1
	DefaultPoolMaxSurge        = 1
	DefaultPoolRefillPerMinute = 60
	DefaultPoolMaxAgeSec       = 3600
	maxPoolSize                = 512
)

// parseWorkspace validates workspace_mode, warm_pool and workspace_sync (bad collects the
// errors, each naming the key and the fix).
func parseWorkspace(mode string, shapes []wirePoolShape, limits *wsync.Limits, bad func(string, ...any)) (WorkspaceMode, []PoolShape, wsync.Limits) {
	m := WorkspaceMode(mode)
	switch m {
	case "":
		m = WorkspaceShared
	case WorkspaceShared, WorkspaceIsolated:
	default:
		bad("box.kubernetes.workspace_mode %q must be shared (subPaths of the box root claim) or isolated (an emptyDir per sandbox, files copied in and out)", mode)
	}
	var lim wsync.Limits
	if limits != nil {
		if m != WorkspaceIsolated {
			bad("box.kubernetes.workspace_sync applies to workspace_mode isolated only (shared mode copies nothing): remove it or set workspace_mode to isolated")
		}
		lim = *limits
		for _, f := range []struct {
			key string
			v   int64
		}{{"push_max_files", int64(lim.PushMaxFiles)}, {"push_max_file_bytes", lim.PushMaxFileBytes}, {"push_max_total_bytes", lim.PushMaxTotalBytes},
			{"pull_max_entries", int64(lim.PullMaxEntries)}, {"pull_max_file_bytes", lim.PullMaxFileBytes}, {"pull_max_total_bytes", lim.PullMaxTotalBytes}} {
			if f.v < 0 {
				bad("box.kubernetes.workspace_sync.%s is %d: give a positive number, or 0 (or nothing) for the default", f.key, f.v)
			}
		}
	}
	if len(shapes) > 0 && m != WorkspaceIsolated {
		bad("box.kubernetes.warm_pool needs workspace_mode isolated: a warm Pod is started before its session is known, so it cannot carry the session's subPath mounts of the box root claim; set workspace_mode to isolated or remove warm_pool")
	}
	var out []PoolShape
	seen := map[string]int{}
	for i, w := range shapes {
		key := fmt.Sprintf("box.kubernetes.warm_pool[%d]", i)
		intOr := func(name string, v *int, def, lo, hi int) int {
			n := def
			if v != nil {
				n = *v
			}
			if n < lo || n > hi {
				bad("%s.%s is %d: it must be between %d and %d", key, name, n, lo, hi)
			}
			return n
		}
		p := PoolShape{Image: w.Image, CPUs: DefaultPoolCPUs, MemoryMB: DefaultPoolMemoryMB, ReadOnlyRootfs: DefaultPoolReadOnlyRootfs}
		if w.CPUs != nil {
			p.CPUs = *w.CPUs
		}
		if w.MemoryMB != nil {
			p.MemoryMB = *w.MemoryMB
		}
		if w.ReadOnlyRootfs != nil {
			p.ReadOnlyRootfs = *w.ReadOnlyRootfs
		}
		if p.Image == "" {
			bad("%s.image is empty: name the sandbox image of the sessions this pool serves (LangBot's box image)", key)
		}
		if p.CPUs <= 0 {
			bad("%s.cpus is %g: give the sessions' cpus, more than 0 as in a BoxSpec (default %g)", key, p.CPUs, DefaultPoolCPUs)
		}
		if p.MemoryMB < 32 {
			bad("%s.memory_mb is %d: give the sessions' memory_mb, at least 32 as in a BoxSpec (default %d)", key, p.MemoryMB, DefaultPoolMemoryMB)
		}
		p.Size = intOr("size", w.Size, DefaultPoolSize, 1, maxPoolSize)
		p.MaxSurge = intOr("max_surge", w.MaxSurge, DefaultPoolMaxSurge, 0, maxPoolSize)
		p.RefillPerMinute = intOr("refill_per_minute", w.RefillPerMinute, DefaultPoolRefillPerMinute, 1, 6000)
		p.MaxAge = time.Duration(intOr("max_age_sec", w.MaxAgeSec, DefaultPoolMaxAgeSec, 1, 30*24*3600)) * time.Second
		if j, dup := seen[p.Key()]; dup {
			bad("%s has the image and resources of box.kubernetes.warm_pool[%d] (image, cpus, memory_mb, read_only_rootfs): merge the two entries (add their sizes)", key, j)
		}
		seen[p.Key()] = i
		out = append(out, p)
	}
	return m, out, lim
}
