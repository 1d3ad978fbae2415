package wsync

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ServeOptions configure the sandbox end.
type ServeOptions struct {
	// Base is the directory the request's absolute mount paths are resolved in, without
	// following symlinks: "/" in a sandbox (boxagent), a temporary directory in tests.
	Base string
}

// Serve is the sandbox end of one exchange (`boxagent sync`): it reads one request of a
// Session from in, applies it (push) or answers it (pull), and writes the response to out.
// Everything the request names is opened beneath opts.Base one component at a time with
// O_NOFOLLOW, so a symlink planted in the sandbox is never followed. An error is also sent
// to the peer when the response has not started. The caller ends the process (closing in)
// after Serve returns.
func Serve(ctx context.Context, in io.Reader, out io.Writer, opts ServeOptions) error {
	if opts.Base == "" {
		opts.Base = "/"
	}
	br := bufio.NewReaderSize(in, 64<<10)
	bw := bufio.NewWriterSize(out, 64<<10)
	sv := &server{ctx: ctx, in: br, out: bw}
	err := sv.serve(opts)
	if err != nil && !sv.started {
		_ = writeMagic(bw)
		_ = writeFrame(bw, response{Error: toWire(err)})
		_ = writeFrame(bw, trailer{})
	}
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write the response: %w", ferr)
	}
	for _, t := range sv.trees {
		unix.Close(t.root)
	}
	return err
}

type server struct {
	ctx     context.Context
	in      *bufio.Reader
	out     *bufio.Writer
	req     request
	trees   []*sandboxTree
	started bool // the response header was written
}

type sandboxTree struct {
	reqTree
	root    int
	filter  *filter
	base    map[string]wireEntry
	foreign bool   // Synced but the marker is not this session's: the sandbox was replaced
	marker  string // the session id the root's marker holds
}

func (sv *server) serve(opts ServeOptions) error {
	if err := readMagic(sv.in); err != nil {
		return err
	}
	if err := readFrame(sv.in, &sv.req); err != nil {
		return err
	}
	if err := sv.check(); err != nil {
		return err
	}
	base, err := unix.Open(opts.Base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", opts.Base, err)
	}
	defer unix.Close(base)
	for _, rt := range sv.req.Trees {
		f, err := newFilter(sv.req.Skip, rt.Exclude)
		if err != nil {
			return invalidf("tree %s: %v", rt.Root, err)
		}
		t := &sandboxTree{reqTree: rt, filter: f, base: map[string]wireEntry{}}
		for _, e := range rt.Base {
			if err := f.check(e.Path); err != nil {
				return invalidf("tree %s: base: %v", rt.Root, err)
			}
			if e.Kind != KindFile && e.Kind != KindDir && e.Kind != KindSymlink {
				return invalidf("tree %s: base entry %.200q of kind %q", rt.Root, e.Path, e.Kind)
			}
			if _, dup := t.base[e.Path]; dup {
				return invalidf("tree %s: base entry %.200q twice", rt.Root, e.Path)
			}
			t.base[e.Path] = e
		}
		root, err := openDir(base, strings.TrimPrefix(rt.Root, "/"), true)
		if err != nil {
			return fmt.Errorf("open %s in the sandbox (a symlink or a file where a directory should be?): %w", rt.Root, err)
		}
		t.root = root
		sv.trees = append(sv.trees, t)
		t.marker = readMarker(root)
		t.foreign = rt.Synced && t.marker != sv.req.Session
	}
	if sv.req.Op == "push" {
		return sv.push()
	}
	return sv.pull()
}

func (sv *server) check() error {
	r := &sv.req
	if r.Op != "push" && r.Op != "pull" {
		return invalidf("op %q (push or pull)", r.Op)
	}
	if len(r.Session) == 0 || len(r.Session) > 64 || strings.ContainsAny(r.Session, "/\x00\n") {
		return invalidf("session id %.80q", r.Session)
	}
	if len(r.Trees) == 0 || len(r.Trees) > maxTrees {
		return invalidf("%d trees (1 to %d)", len(r.Trees), maxTrees)
	}
	l := r.Limits
	if l.PushMaxFiles <= 0 || l.PushMaxFileBytes <= 0 || l.PushMaxTotalBytes <= 0 || l.PullMaxEntries <= 0 || l.PullMaxFileBytes <= 0 || l.PullMaxTotalBytes <= 0 {
		return invalidf("limits must all be positive: %+v", l)
	}
	if len(r.Skip) > 1024 {
		return invalidf("%d skip names", len(r.Skip))
	}
	seen := map[string]bool{}
	for _, t := range r.Trees {
		if err := checkMountPath(t.Root); err != nil {
			return invalidf("%v", err)
		}
		if seen[t.Root] {
			return invalidf("root %s twice", t.Root)
		}
		seen[t.Root] = true
		if len(t.Base) > maxListItems || len(t.Delete) > maxListItems || len(t.Exclude) > maxTrees {
			return invalidf("tree %s: too many entries", t.Root)
		}
		if r.Op == "pull" && (t.Force || len(t.Delete) > 0) {
			return invalidf("tree %s: force or deletions in a pull", t.Root)
		}
	}
	if r.Op == "pull" && r.Tar {
		return invalidf("a pull request carries no tar stream")
	}
	return nil
}

// readMarker returns the session id recorded at the root ("" if none or unreadable).
func readMarker(root int) string {
	st, exists, err := lstatAt(root, markerName)
	if !exists || err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > 128 {
		return ""
	}
	f, _, err := openRegular(root, markerName, &st)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 129))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeMarker records the session at the root of a tree: a temporary file renamed into place
// (a marker is never torn), not fsynced, like everything else the sandbox end writes: it lives
// in the sandbox's own file system (an emptyDir that ends with the Pod), and an fsync there
// cost 10-30 ms of a session's first exec on the local cluster.
func writeMarker(root int, session string) error {
	var r [8]byte
	_, _ = rand.Read(r[:])
	tmp := markerName + ".tmp-" + hex.EncodeToString(r[:])
	fd, err := unix.Openat(root, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write([]byte(session + "\n"))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(root, tmp, root, markerName)
	}
	if werr != nil {
		_ = unix.Unlinkat(root, tmp, 0)
	}
	return werr
}

func (sv *server) push() error {
	l := sv.req.Limits
	roots := make([]int, len(sv.trees))
	filters := make([]*filter, len(sv.trees))
	mounts := make([]string, len(sv.trees))
	for i, t := range sv.trees {
		roots[i], filters[i], mounts[i] = t.root, t.filter, t.Root
		for _, p := range t.Delete {
			if err := t.filter.check(p); err != nil {
				return invalidf("tree %s: deletion: %v", t.Root, err)
			}
		}
	}
	rv := newReceiver(roots, filters, mounts, receiveLimits{
		direction: "push", maxRecords: maxListItems, maxFile: l.PushMaxFileBytes, maxTotal: l.PushMaxTotalBytes,
		fileLimit: "push_max_file_bytes", totalLimit: "push_max_total_bytes", recordsLimit: "push_max_files",
	}, false)
	if sv.req.Tar {
		if err := rv.receive(sv.ctx, sv.in); err != nil {
			return err
		}
	} else {
		var t trailer
		if err := readFrame(sv.in, &t); err != nil {
			return err
		}
	}
	defer rv.discard()
	for i := range sv.trees {
		seen := map[string]bool{}
		for _, in := range rv.puts[i] {
			seen[in.Path] = true
		}
		for _, p := range sv.trees[i].Delete {
			if seen[p] {
				return invalidf("tree %s: %.200q is both deleted and sent", sv.trees[i].Root, p)
			}
		}
	}
	resp := response{}
	suffix := conflictSuffix(sv.req.Now)
	for i, t := range sv.trees {
		t := t
		known := func(rel string, key statKey) (string, bool) {
			if e, ok := t.base[rel]; ok && e.Key != nil && *e.Key == key {
				return e.Hash, true
			}
			return "", false
		}
		c := newCommitter(t.root, t.Root, !t.Force, t.Force, suffix, known, false, rv)
		if err := c.commit(sv.ctx, t.Delete, rv.puts[i], func(rel string) (*Entry, *statKey) {
			if e, ok := t.base[rel]; ok {
				return &e.Entry, e.Key
			}
			return nil, nil
		}); err != nil {
			return err
		}
		rt := respTree{Reset: t.foreign, Conflicts: c.conflicts, Errors: c.errors}
		incoming := map[string]string{}
		for _, in := range rv.puts[i] {
			incoming[in.Path] = in.Hash
		}
		for _, k := range c.valid() {
			if h, ok := incoming[k.Path]; ok && h == k.Hash {
				rt.Keys = append(rt.Keys, k)
			}
		}
		if t.marker != sv.req.Session {
			if err := writeMarker(t.root, sv.req.Session); err != nil {
				rt.Errors = append(rt.Errors, PathError{Path: markerName, Err: "record the session: " + err.Error()})
			}
		}
		resp.Trees = append(resp.Trees, rt)
	}
	sv.started = true
	if err := writeMagic(sv.out); err != nil {
		return err
	}
	if err := writeFrame(sv.out, resp); err != nil {
		return err
	}
	return writeFrame(sv.out, trailer{})
}

func (sv *server) pull() error {
	var t0 trailer
	if err := readFrame(sv.in, &t0); err != nil {
		return err
	}
	l := sv.req.Limits
	resp := response{}
	scans := make([]*scanned, len(sv.trees))
	chs := make([]changes, len(sv.trees))
	entries := 0
	total := int64(0)
	for i, t := range sv.trees {
		t := t
		base := t.base
		if t.foreign {
			base = map[string]wireEntry{}
		}
		sc, err := scanTree(sv.ctx, t.root, t.filter, scanOpts{maxEntries: l.PullMaxEntries - entries, lookup: func(rel string, size int64, key statKey) (string, bool) {
			b, ok := base[rel]
			if !ok || b.Kind != KindFile || b.Size != size {
				return "", false
			}
			if b.Key != nil && *b.Key == key {
				return b.Hash, false
			}
			return "", true
		}})
		if err != nil {
			return fmt.Errorf("read %s: %w", t.Root, err)
		}
		entries += len(sc.entries)
		if sc.over != "" || entries > l.PullMaxEntries {
			return &LimitError{Direction: "pull", Limit: "pull_max_entries", Max: int64(l.PullMaxEntries), Seen: int64(entries)}
		}
		plain := make(map[string]Entry, len(base))
		for p, e := range base {
			plain[p] = e.Entry
		}
		ch := diff(plain, sc)
		for _, p := range ch.puts {
			e := sc.entries[p]
			if e.Kind != KindFile {
				continue
			}
			if e.Size > l.PullMaxFileBytes {
				return &LimitError{Direction: "pull", Limit: "pull_max_file_bytes", Max: l.PullMaxFileBytes, Seen: e.Size, Path: t.Root + "/" + p}
			}
			total += e.Size
			if total > l.PullMaxTotalBytes {
				return &LimitError{Direction: "pull", Limit: "pull_max_total_bytes", Max: l.PullMaxTotalBytes, Seen: total}
			}
		}
		rt := respTree{Reset: t.foreign, Entries: len(sc.entries), Delete: ch.deletes, Skipped: sc.skipped, Unknown: sc.unknown}
		inPuts := map[string]bool{}
		for _, p := range ch.puts {
			inPuts[p] = true
		}
		for _, p := range sc.paths {
			e := sc.entries[p]
			b, ok := base[p]
			if e.Kind == KindFile && e.keyed && ok && !inPuts[p] && (b.Key == nil || *b.Key != e.key) {
				rt.Keys = append(rt.Keys, keyed{Path: p, Key: e.key, Hash: e.Hash})
			}
		}
		scans[i], chs[i] = sc, ch
		resp.Trees = append(resp.Trees, rt)
	}
	resp.Tar = false
	for _, ch := range chs {
		if len(ch.puts) > 0 {
			resp.Tar = true
		}
	}
	sv.started = true
	if err := writeMagic(sv.out); err != nil {
		return err
	}
	if err := writeFrame(sv.out, resp); err != nil {
		return err
	}
	if !resp.Tar {
		return writeFrame(sv.out, trailer{})
	}
	pk := newPacker(sv.out)
	sentTotal := int64(0)
	var stop error
packing:
	for i, t := range sv.trees {
		for _, p := range chs[i].puts {
			if err := sv.ctx.Err(); err != nil {
				stop = err
				break packing
			}
			se, ok, err := pk.pack(i, t.root, scans[i].entries[p], l.PullMaxFileBytes, t.Root+"/"+p)
			var le *LimitError
			if errors.As(err, &le) {
				le.Direction, le.Limit = "pull", "pull_max_file_bytes"
				stop = err
				break packing
			}
			if err != nil {
				stop = err
				break packing
			}
			if ok && se.Kind == KindFile {
				sentTotal += se.Size
				if sentTotal > l.PullMaxTotalBytes {
					stop = &LimitError{Direction: "pull", Limit: "pull_max_total_bytes", Max: l.PullMaxTotalBytes, Seen: sentTotal}
					break packing
				}
			}
		}
	}
	if err := pk.finish(sv.out, stop); err != nil {
		return err
	}
	return stop
}
