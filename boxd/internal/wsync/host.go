package wsync

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Tree is one mount of a session as boxd's side sees it.
type Tree struct {
	// HostPath names the directory in messages.
	HostPath string
	// MountPath is where the sandbox sees it (absolute, e.g. /workspace or
	// /workspace/.skills/<name>). A tree nested in another is excluded from it.
	MountPath string
	// Mode is backend.MountRO (pushed, never pulled back) or backend.MountRW.
	Mode backend.MountMode
	// Dir is the directory on boxd's side, opened without following symlinks
	// (mounts.Prepare + Source.OpenDir). NewSession keeps its own handle: the caller may close
	// Dir afterwards.
	Dir *os.File
}

// Conn is one exchange with the sandbox end (Serve), e.g. the stdin and stdout of one
// `boxagent sync` run through the exec agent.
type Conn struct {
	// Stdin receives the request; wsync closes it once the request is written, or when the
	// exchange fails.
	Stdin io.WriteCloser
	// Stdout carries the response.
	Stdout io.Reader
	// Done, if set, is called once after the exchange. failed: the exchange failed and
	// boxd stopped reading, so the sandbox end may be blocked writing: end it (kill the
	// command). Otherwise wait for it to exit; its error is then the exchange's.
	Done func(failed bool) error
}

// Dialer starts the sandbox end for one exchange. Push calls it only when there is
// something to send.
type Dialer func(ctx context.Context) (*Conn, error)

// Session keeps what a session's sandbox holds of each tree (the base of the next
// incremental sync) and runs the syncs, one at a time. Create one per sandbox: a new
// sandbox needs a new Session (a replaced one is detected through a marker and synced in
// full, see Report.Reset).
type Session struct {
	mu     sync.Mutex
	id     string
	limits Limits
	skip   []string
	now    func() time.Time
	fsync  bool
	log    *slog.Logger
	trees  []*hostTree
	closed bool
}

type cached struct {
	key  statKey
	hash string
}

type hostTree struct {
	Tree
	root    int
	filter  *filter
	exclude []string
	base    map[string]Entry
	skeys   map[string]statKey // the sandbox's stat keys of base files
	hcache  map[string]cached  // boxd's side: hashes by stat key
	synced  bool
}

// NewSession checks the trees and returns a Session with an empty base (the first Push
// sends everything).
func NewSession(trees []Tree, opts Options) (*Session, error) {
	limits, err := opts.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	skip := opts.Skip
	if skip == nil {
		skip = DefaultSkip
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	s := &Session{id: hex.EncodeToString(idb[:]), limits: limits, skip: append([]string(nil), skip...),
		now: opts.Now, fsync: !opts.NoFsync, log: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if len(trees) > maxTrees {
		return nil, fmt.Errorf("workspace sync: %d mounts, at most %d", len(trees), maxTrees)
	}
	seen := map[string]bool{}
	for i, t := range trees {
		if err := checkMountPath(t.MountPath); err != nil {
			return nil, fmt.Errorf("workspace sync: mount %d (host_path %s): %w", i, t.HostPath, err)
		}
		if seen[t.MountPath] {
			return nil, fmt.Errorf("workspace sync: mount_path %s appears twice: give each mount its own mount_path", t.MountPath)
		}
		seen[t.MountPath] = true
		if t.Mode != backend.MountRO && t.Mode != backend.MountRW {
			return nil, fmt.Errorf("workspace sync: mount %s has mode %q: only ro and rw mounts are synced", t.MountPath, t.Mode)
		}
		if t.Dir == nil {
			return nil, fmt.Errorf("workspace sync: mount %s has no open directory (Tree.Dir)", t.MountPath)
		}
	}
	for _, t := range trees {
		var exclude []string
		for _, o := range trees {
			if rel, ok := strings.CutPrefix(o.MountPath, t.MountPath+"/"); ok {
				exclude = append(exclude, rel)
			}
		}
		f, err := newFilter(skip, exclude)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("workspace sync: mount %s: %w", t.MountPath, err)
		}
		fd, err := unix.Openat(int(t.Dir.Fd()), ".", dirFlags, 0)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("workspace sync: open host_path %s: %w", t.HostPath, err)
		}
		s.trees = append(s.trees, &hostTree{Tree: Tree{HostPath: t.HostPath, MountPath: t.MountPath, Mode: t.Mode},
			root: fd, filter: f, exclude: exclude, base: map[string]Entry{}, skeys: map[string]statKey{}, hcache: map[string]cached{}})
	}
	return s, nil
}

func checkMountPath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" || len(p) > maxPathBytes || strings.ContainsRune(p, 0) {
		return fmt.Errorf("mount_path %q must be a clean absolute path other than /", p)
	}
	return nil
}

// Close releases the Session's directory handles.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.trees {
		if t.root >= 0 {
			unix.Close(t.root)
			t.root = -1
		}
	}
	s.closed = true
}

func (s *Session) boxErr(direction string, err error) error {
	var le *LimitError
	if errors.As(err, &le) {
		le.Direction = direction
		return limitErr(le, s.skip)
	}
	var be *backend.Error
	if errors.As(err, &be) {
		return err
	}
	to := "to the sandbox"
	if direction == "pull" {
		to = "from the sandbox"
	}
	if errors.Is(err, ErrInvalidStream) {
		return &backend.Error{Message: fmt.Sprintf("workspace sync %s failed: %v; nothing was changed", to, err), Err: err}
	}
	return &backend.Error{Message: fmt.Sprintf("workspace sync %s failed: %v", to, err), Err: err}
}

// Push copies to the sandbox what changed on boxd's side since the last sync (everything the
// first time), deletions included. Call it before each command. Limits are checked on the
// whole of every tree before anything is sent; a refused push changes nothing. Nothing to
// send: the sandbox is not contacted (Report.Exchanged false).
func (s *Session) Push(ctx context.Context, dial Dialer) (*Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("workspace sync: the session is closed")
	}
	rep, reset, err := s.push(ctx, dial)
	if err != nil || !reset {
		return rep, err
	}
	// The sandbox did not hold this session's copy (replaced): its base is gone, send all.
	again, _, err := s.push(ctx, dial)
	if again != nil {
		for i := range again.Trees {
			again.Trees[i].Reset = again.Trees[i].Reset || rep.Trees[i].Reset
		}
	}
	return again, err
}

type pushPlan struct {
	scans   []*scanned
	changes []changes
}

func (s *Session) push(ctx context.Context, dial Dialer) (*Report, bool, error) {
	rep := &Report{Direction: "push"}
	plan := pushPlan{}
	files, bytes := 0, int64(0)
	for _, t := range s.trees {
		t := t
		remaining := s.limits.PushMaxFiles - files
		sc, err := scanTree(ctx, t.root, t.filter, scanOpts{maxFiles: remaining, lookup: func(rel string, size int64, key statKey) (string, bool) {
			if c, ok := t.hcache[rel]; ok && c.key == key {
				return c.hash, false
			}
			b, ok := t.base[rel]
			return "", ok && b.Kind == KindFile && b.Size == size
		}})
		if err != nil {
			return nil, false, s.boxErr("push", fmt.Errorf("read host_path %s: %w", t.HostPath, err))
		}
		files += sc.files
		if sc.over != "" || files > s.limits.PushMaxFiles {
			return nil, false, s.boxErr("push", &LimitError{Limit: "push_max_files", Max: int64(s.limits.PushMaxFiles), Seen: int64(files)})
		}
		for _, p := range sc.paths {
			e := sc.entries[p]
			if e.Kind == KindFile && e.Size > s.limits.PushMaxFileBytes {
				return nil, false, s.boxErr("push", &LimitError{Limit: "push_max_file_bytes", Max: s.limits.PushMaxFileBytes, Seen: e.Size, Path: t.HostPath + "/" + p})
			}
		}
		bytes += sc.bytes
		if bytes > s.limits.PushMaxTotalBytes {
			return nil, false, s.boxErr("push", &LimitError{Limit: "push_max_total_bytes", Max: s.limits.PushMaxTotalBytes, Seen: bytes})
		}
		// The hash cache follows the scan: keys of files no longer there are dropped.
		hc := make(map[string]cached, len(sc.entries))
		for p, e := range sc.entries {
			if e.keyed {
				hc[p] = cached{key: e.key, hash: e.Hash}
			}
		}
		t.hcache = hc
		plan.scans = append(plan.scans, sc)
		plan.changes = append(plan.changes, diff(t.base, sc))
	}
	need := false
	for i, t := range s.trees {
		rep.Trees = append(rep.Trees, TreeReport{MountPath: t.MountPath, HostPath: t.HostPath, Entries: len(plan.scans[i].entries), Skipped: plan.scans[i].skipped})
		if !t.synced || !plan.changes[i].empty() {
			need = true
		}
	}
	if !need {
		return rep, false, nil
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, false, s.boxErr("push", fmt.Errorf("start the sandbox end: %w", err))
	}
	rep.Exchanged = true

	req := request{Op: "push", Session: s.id, Now: s.now().Unix(), Skip: s.skip, Limits: s.limits}
	for i, t := range s.trees {
		rt := reqTree{Root: t.MountPath, Exclude: t.exclude, Synced: t.synced, Force: t.Mode == backend.MountRO, Delete: plan.changes[i].deletes}
		for _, p := range append(append([]string(nil), plan.changes[i].puts...), plan.changes[i].deletes...) {
			if b, ok := t.base[p]; ok {
				we := wireEntry{Entry: b}
				if k, ok := t.skeys[p]; ok {
					k := k
					we.Key = &k
				}
				rt.Base = append(rt.Base, we)
			}
		}
		if len(plan.changes[i].puts) > 0 {
			req.Tar = true
		}
		req.Trees = append(req.Trees, rt)
	}

	packed := make([]map[string]sent, len(s.trees))
	writeErr := make(chan error, 1)
	go func() {
		writeErr <- s.writePush(ctx, conn.Stdin, &req, plan, packed, rep)
	}()
	resp, rerr := readResponse(bufio.NewReader(conn.Stdout), false)
	if rerr != nil {
		_ = conn.Stdin.Close() // unblocks the writer
	}
	werr := <-writeErr
	err = firstErr(werr, rerr)
	if err == nil && resp.Error != nil {
		err = resp.Error.err()
	}
	if err == nil && len(resp.Trees) != len(s.trees) {
		err = invalidf("the response has %d trees for %d", len(resp.Trees), len(s.trees))
	}
	if err = s.finish(conn, err); err != nil {
		return nil, false, s.boxErr("push", err)
	}

	reset := false
	for i, t := range s.trees {
		rt := resp.Trees[i]
		tr := &rep.Trees[i]
		tr.Conflicts, tr.Errors = rt.Conflicts, rt.Errors
		if rt.Reset {
			t.base, t.skeys, t.synced = map[string]Entry{}, map[string]statKey{}, false
			tr.Reset, reset = true, true
			continue
		}
		failed := map[string]bool{}
		for _, e := range rt.Errors {
			failed[e.Path] = true
		}
		for p, se := range packed[i] {
			if failed[p] {
				continue
			}
			t.base[p] = se.Entry
			delete(t.skeys, p)
			if se.keyed {
				t.hcache[p] = cached{key: se.key, hash: se.Hash}
			}
		}
		for _, p := range plan.changes[i].deletes {
			if !failed[p] {
				delete(t.base, p)
				delete(t.skeys, p)
			}
		}
		for _, k := range rt.Keys {
			if b, ok := t.base[k.Path]; ok && b.Kind == KindFile && b.Hash == k.Hash {
				t.skeys[k.Path] = k.Key
			}
		}
		t.synced = true
		tr.Deleted = len(plan.changes[i].deletes)
	}
	s.logReport(rep)
	return rep, reset, nil
}

// writePush writes the request and the tar of every changed entry, then closes w. A file that
// grew past a limit since the scan abandons the stream (the trailer says why; the sandbox
// applies nothing).
func (s *Session) writePush(ctx context.Context, w io.WriteCloser, req *request, plan pushPlan, packed []map[string]sent, rep *Report) (err error) {
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close the request: %w", cerr)
		}
	}()
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := writeMagic(bw); err != nil {
		return err
	}
	if err := writeFrame(bw, req); err != nil {
		return err
	}
	if !req.Tar {
		if err := writeFrame(bw, trailer{}); err != nil {
			return err
		}
		return bw.Flush()
	}
	pk := newPacker(bw)
	total := int64(0)
	var stop error
packing:
	for i, t := range s.trees {
		packed[i] = map[string]sent{}
		tr := &rep.Trees[i]
		for _, p := range plan.changes[i].puts {
			if err := ctx.Err(); err != nil {
				return err
			}
			se, ok, err := pk.pack(i, t.root, plan.scans[i].entries[p], s.limits.PushMaxFileBytes, t.HostPath+"/"+p)
			var le *LimitError
			if errors.As(err, &le) {
				le.Limit = "push_max_file_bytes"
				stop = err
				break packing
			}
			if err != nil {
				return err
			}
			if !ok {
				tr.Skipped = append(tr.Skipped, Skipped{Path: p, Reason: "changed while it was sent; sent by the next sync"})
				continue
			}
			packed[i][p] = se
			switch se.Kind {
			case KindFile:
				tr.Files++
				tr.Bytes += se.Size
				total += se.Size
				if total > s.limits.PushMaxTotalBytes {
					stop = &LimitError{Limit: "push_max_total_bytes", Max: s.limits.PushMaxTotalBytes, Seen: total}
					break packing
				}
			case KindDir:
				tr.Dirs++
			case KindSymlink:
				tr.Symlinks++
			}
		}
	}
	if err := pk.finish(bw, stop); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return stop
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// finish ends an exchange: Stdin closed, Wait called; err is the exchange's outcome.
func (s *Session) finish(conn *Conn, err error) error {
	_ = conn.Stdin.Close()
	if conn.Done != nil {
		if derr := conn.Done(err != nil); derr != nil && err == nil {
			err = fmt.Errorf("the sandbox end failed: %w", derr)
		}
	}
	return err
}

// readResponse reads a response's magic and header (and, when tar is false and the header
// has no tar, its trailer).
func readResponse(r *bufio.Reader, tarAllowed bool) (*response, error) {
	if err := readMagic(r); err != nil {
		return nil, err
	}
	var resp response
	if err := readFrame(r, &resp); err != nil {
		return nil, err
	}
	if resp.Tar && !tarAllowed {
		return nil, invalidf("unexpected tar stream in a push response")
	}
	if !resp.Tar {
		var t trailer
		if err := readFrame(r, &t); err != nil {
			return nil, err
		}
	}
	return &resp, nil
}

// Pull brings back what the sandbox changed in the rw trees since the last sync, deletions
// included, and applies it as compare-and-swap: a path boxd's side changed meanwhile keeps
// both versions (Report conflicts). Call it after each command returns, before its result
// is returned. A refused pull (a limit, an invalid stream) changes nothing.
func (s *Session) Pull(ctx context.Context, dial Dialer) (*Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("workspace sync: the session is closed")
	}
	rep := &Report{Direction: "pull"}
	var rw []*hostTree
	for _, t := range s.trees {
		if t.Mode == backend.MountRW {
			rw = append(rw, t)
		}
	}
	if len(rw) == 0 {
		return rep, nil
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, s.boxErr("pull", fmt.Errorf("start the sandbox end: %w", err))
	}
	rep.Exchanged = true
	req := request{Op: "pull", Session: s.id, Now: s.now().Unix(), Skip: s.skip, Limits: s.limits}
	for _, t := range rw {
		rt := reqTree{Root: t.MountPath, Exclude: t.exclude, Synced: t.synced}
		paths := make([]string, 0, len(t.base))
		for p := range t.base {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			we := wireEntry{Entry: t.base[p]}
			if k, ok := t.skeys[p]; ok {
				k := k
				we.Key = &k
			}
			rt.Base = append(rt.Base, we)
		}
		req.Trees = append(req.Trees, rt)
	}
	writeErr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(conn.Stdin, 64<<10)
		err := writeMagic(bw)
		if err == nil {
			err = writeFrame(bw, &req)
		}
		if err == nil {
			err = writeFrame(bw, trailer{})
		}
		if err == nil {
			err = bw.Flush()
		}
		if cerr := conn.Stdin.Close(); err == nil {
			err = cerr
		}
		writeErr <- err
	}()
	rep2, err := s.pull(ctx, bufio.NewReaderSize(conn.Stdout, 64<<10), rw, rep)
	if err != nil {
		_ = conn.Stdin.Close()
	}
	if werr := <-writeErr; err == nil && werr != nil {
		err = fmt.Errorf("write the request: %w", werr)
	}
	if err = s.finish(conn, err); err != nil {
		return nil, s.boxErr("pull", err)
	}
	s.logReport(rep2)
	return rep2, nil
}

func (s *Session) pull(ctx context.Context, r *bufio.Reader, rw []*hostTree, rep *Report) (*Report, error) {
	resp, err := readResponse(r, true)
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error.err()
	}
	if len(resp.Trees) != len(rw) {
		return nil, invalidf("the response has %d trees for %d", len(resp.Trees), len(rw))
	}
	roots := make([]int, len(rw))
	filters := make([]*filter, len(rw))
	mounts := make([]string, len(rw))
	for i, t := range rw {
		roots[i], filters[i], mounts[i] = t.root, t.filter, t.MountPath
		rt := resp.Trees[i]
		if len(rt.Delete) > len(t.base) || len(rt.Keys) > s.limits.PullMaxEntries || len(rt.Skipped) > maxListItems || len(rt.Unknown) > maxListItems {
			return nil, invalidf("tree %s: more deletions, keys or skipped entries than it can hold", t.MountPath)
		}
		for _, p := range rt.Delete {
			if _, ok := t.base[p]; !ok && !rt.Reset {
				return nil, invalidf("tree %s: deletion of %.200q, which the last sync did not leave there", t.MountPath, p)
			}
		}
		for _, k := range rt.Keys {
			if err := filters[i].check(k.Path); err != nil {
				return nil, invalidf("tree %s: key for %v", t.MountPath, err)
			}
		}
	}
	rv := newReceiver(roots, filters, mounts, receiveLimits{
		direction: "pull", maxRecords: s.limits.PullMaxEntries, maxFile: s.limits.PullMaxFileBytes, maxTotal: s.limits.PullMaxTotalBytes,
		fileLimit: "pull_max_file_bytes", totalLimit: "pull_max_total_bytes", recordsLimit: "pull_max_entries",
	}, s.fsync)
	if resp.Tar {
		if err := rv.receive(ctx, r); err != nil {
			return nil, err
		}
	}
	defer rv.discard()
	suffix := conflictSuffix(s.now().Unix())
	for i, t := range rw {
		t := t
		rt := resp.Trees[i]
		if rt.Reset {
			// The sandbox does not hold this session's copy: compare everything afresh.
			t.base, t.skeys = map[string]Entry{}, map[string]statKey{}
		}
		for _, p := range rt.Delete {
			if _, ok := t.base[p]; !ok {
				return nil, invalidf("tree %s: deletion of %.200q, which the last sync did not leave there", t.MountPath, p)
			}
		}
		known := func(rel string, key statKey) (string, bool) {
			c, ok := t.hcache[rel]
			return c.hash, ok && c.key == key
		}
		c := newCommitter(t.root, t.MountPath, false, false, suffix, known, s.fsync, rv)
		if err := c.commit(ctx, rt.Delete, rv.puts[i], func(rel string) (*Entry, *statKey) {
			if b, ok := t.base[rel]; ok {
				return &b, nil
			}
			return nil, nil
		}); err != nil {
			return nil, err
		}
		tr := TreeReport{MountPath: t.MountPath, HostPath: t.HostPath, Entries: rt.Entries, Skipped: rt.Skipped,
			Conflicts: c.conflicts, Errors: c.errors, Reset: rt.Reset, Deleted: len(rt.Delete)}
		for _, p := range rt.Delete {
			if c.done[p] {
				delete(t.base, p)
				delete(t.skeys, p)
				delete(t.hcache, p)
			}
		}
		for _, in := range rv.puts[i] {
			switch in.Kind {
			case KindFile:
				tr.Files++
				tr.Bytes += in.Size
			case KindDir:
				tr.Dirs++
			case KindSymlink:
				tr.Symlinks++
			}
			if !c.done[in.Path] {
				continue
			}
			t.base[in.Path] = in.Entry
			if in.key != nil {
				t.skeys[in.Path] = *in.key
			} else {
				delete(t.skeys, in.Path)
			}
			delete(t.hcache, in.Path)
		}
		for _, k := range c.valid() {
			t.hcache[k.Path] = cached{key: k.Key, hash: k.Hash}
		}
		for _, k := range rt.Keys {
			if b, ok := t.base[k.Path]; ok && b.Kind == KindFile && b.Hash == k.Hash {
				t.skeys[k.Path] = k.Key
			}
		}
		rep.Trees = append(rep.Trees, tr)
	}
	return rep, nil
}

func (s *Session) logReport(rep *Report) {
	entries, bytes := rep.Moved()
	conflicts := rep.Conflicts()
	if entries == 0 && len(conflicts) == 0 {
		return
	}
	attrs := []any{"direction", rep.Direction, "entries", entries, "bytes", bytes}
	if len(conflicts) > 0 {
		attrs = append(attrs, "conflicts", conflicts)
		s.log.Warn("workspace sync kept both versions of paths changed on both sides", attrs...)
		return
	}
	s.log.Debug("workspace sync", attrs...)
}

// TreesOf opens the directories of prepared mounts (mounts.Prepare of mounts.SpecWants:
// validated, the workspace created, nothing followed through a symlink) as the Trees of a
// Session. Call done after NewSession (which keeps its own handles) to close them.
func TreesOf(ss mounts.Sources) (trees []Tree, done func(), err error) {
	done = func() {
		for _, t := range trees {
			t.Dir.Close()
		}
	}
	for _, s := range ss {
		d, err := s.OpenDir()
		if err != nil {
			done()
			return nil, func() {}, err
		}
		trees = append(trees, Tree{HostPath: s.HostPath, MountPath: s.MountPath, Mode: s.Mode, Dir: d})
	}
	return trees, done, nil
}
