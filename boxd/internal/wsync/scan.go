package wsync

import (
	"context"
	"errors"
	"io"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// scanEntry is an entry as a scan saw it, with its stat key on that side.
type scanEntry struct {
	Entry
	key statKey
	// keyed: Hash was computed (or known) for key and may be cached.
	keyed bool
}

// scanned is one side's view of a tree.
type scanned struct {
	entries map[string]*scanEntry
	paths   []string // sorted
	skipped []Skipped
	// unknown are paths whose state could not be read (a directory that cannot be listed, a
	// file that cannot be hashed): base entries at or beneath them are neither changed nor
	// deleted by this sync.
	unknown []string
	files   int   // regular files and symlinks
	bytes   int64 // sum of file sizes
	// over names the cap that stopped the scan ("entries" or "files"), "" if none did.
	over string
}

type scanOpts struct {
	maxEntries int // 0: no cap
	maxFiles   int
	// lookup returns the hash of the file rel (size, key) when it is known, or need=true
	// when it must be computed (the base has a file of that size at rel). Files whose hash is
	// neither known nor needed are certainly changed or new; the pack computes theirs.
	lookup func(rel string, size int64, key statKey) (hash string, need bool)
}

var errStop = errors.New("scan cap reached")

// scanTree lists the tree under root (an O_PATH handle) without following any symlink.
func scanTree(ctx context.Context, root int, f *filter, o scanOpts) (*scanned, error) {
	s := &scanned{entries: map[string]*scanEntry{}}
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: ".", Err: err}
	}
	if err := s.walk(ctx, fd, "", 0, f, o); err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	for p := range s.entries {
		s.paths = append(s.paths, p)
	}
	sort.Strings(s.paths)
	return s, nil
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "/" + name
}

// walk lists the directory fd (owned, closed here) whose relative path is prefix.
func (s *scanned) walk(ctx context.Context, fd int, prefix string, depth int, f *filter, o scanOpts) error {
	dirf := os.NewFile(uintptr(fd), prefix)
	defer dirf.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		names, err := dirf.Readdirnames(256)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.unknownPath(prefix, "cannot be listed: "+err.Error())
			return nil
		}
		for _, name := range names {
			if err := s.visit(ctx, fd, prefix, name, depth, f, o); err != nil {
				return err
			}
		}
	}
}

func (s *scanned) unknownPath(rel, reason string) {
	s.unknown = append(s.unknown, rel)
	shown := rel
	if shown == "" {
		shown = "."
	}
	s.skipped = append(s.skipped, Skipped{Path: shown, Reason: reason})
}

func (s *scanned) add(e *scanEntry, o scanOpts) error {
	s.entries[e.Path] = e
	if e.Kind != KindDir {
		s.files++
	}
	if e.Kind == KindFile {
		s.bytes += e.Size
	}
	if o.maxEntries > 0 && len(s.entries) > o.maxEntries {
		s.over = "entries"
		return errStop
	}
	if o.maxFiles > 0 && s.files > o.maxFiles {
		s.over = "files"
		return errStop
	}
	return nil
}

func (s *scanned) visit(ctx context.Context, fd int, prefix, name string, depth int, f *filter, o scanOpts) error {
	if f.name(name) {
		return nil
	}
	rel := join(prefix, name)
	if f.exclude[rel] {
		return nil
	}
	if err := validRel(rel); err != nil {
		s.skipped = append(s.skipped, Skipped{Path: rel, Reason: "its name cannot be synced: " + err.Error()})
		return nil
	}
	st, exists, err := lstatAt(fd, name)
	if !exists {
		if err != nil {
			s.unknownPath(rel, "cannot be read: "+err.Error())
		}
		return nil // removed meanwhile
	}
	kind, ok := kindOf(&st)
	if !ok {
		s.skipped = append(s.skipped, Skipped{Path: rel, Reason: kindName(&st) + ", not synced"})
		return nil
	}
	switch kind {
	case KindDir:
		if !f.ancestors[rel] {
			if err := s.add(&scanEntry{Entry: Entry{Path: rel, Kind: KindDir, Mode: st.Mode & modeMask}}, o); err != nil {
				return err
			}
		}
		if depth+1 >= maxDepth {
			s.unknownPath(rel, "deeper than the sync's limit of nested directories")
			return nil
		}
		sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			s.unknownPath(rel, "cannot be listed: "+err.Error())
			return nil
		}
		return s.walk(ctx, sub, rel, depth+1, f, o)
	case KindSymlink:
		target, err := readlinkAt(fd, name)
		if err != nil {
			s.unknownPath(rel, "cannot be read: "+err.Error())
			return nil
		}
		return s.add(&scanEntry{Entry: Entry{Path: rel, Kind: KindSymlink, Link: target}}, o)
	default:
		e := &scanEntry{
			Entry: Entry{Path: rel, Kind: KindFile, Mode: st.Mode & modeMask, Size: st.Size, MTime: st.Mtim.Nano()},
			key:   keyOf(&st),
		}
		if o.lookup != nil {
			if h, need := o.lookup(rel, st.Size, e.key); h != "" {
				e.Hash, e.keyed = h, true
			} else if need {
				h, k, stable, err := hashRegular(fd, name, &st)
				if err != nil {
					s.unknownPath(rel, "cannot be read: "+err.Error())
					return nil
				}
				e.Hash, e.key, e.keyed = h, k, stable
			}
		}
		return s.add(e, o)
	}
}

// changes are what differs between a base and a scan.
type changes struct {
	puts    []string // sorted ascending: parents before children
	deletes []string // sorted descending: children before parents
}

func (c changes) empty() bool { return len(c.puts) == 0 && len(c.deletes) == 0 }

// diff compares a scan with the base. Paths at or under s.unknown are left alone.
func diff(base map[string]Entry, s *scanned) changes {
	var c changes
	for _, p := range s.paths {
		if underAny(p, s.unknown) {
			continue
		}
		b, ok := base[p]
		if !ok || !b.sameContent(s.entries[p].Entry) {
			c.puts = append(c.puts, p)
		}
	}
	for p := range base {
		if _, ok := s.entries[p]; !ok && !underAny(p, s.unknown) {
			c.deletes = append(c.deletes, p)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(c.deletes)))
	return c
}
