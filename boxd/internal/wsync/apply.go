package wsync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// committer applies received changes to one tree, each as a compare-and-swap against the
// base: a path is replaced or removed only when what is there now is what the base says (or
// already what is coming). Anything else was changed on this side since the last sync, and
// both versions are kept.
type committer struct {
	root  int
	dirs  dirCache
	mount string // the tree's mount path, for messages
	// incomingWins is the sandbox end (the changes come from boxd): on a conflict the
	// incoming version takes the path and the sandbox's is moved aside. Otherwise (boxd's
	// end, the changes come from the sandbox) boxd's version stays and the incoming one is
	// written next to it.
	incomingWins bool
	// force (ro trees in the sandbox): no compare-and-swap, no copies.
	force  bool
	suffix string // conflictInfix + time
	// known returns this side's cached hash of rel for key.
	known   func(rel string, key statKey) (string, bool)
	fsync   bool
	touched map[string]bool
	rv      *receiver

	conflicts []Conflict
	errors    []PathError
	// learned are stat keys of this side found while hashing, valid until the path is
	// written (replaced says which were).
	learned  map[string]keyed
	replaced map[string]bool
	// done are the paths whose change took effect (or was already in place, or kept both
	// versions); failed ones are in errors.
	done map[string]bool
}

func newCommitter(root int, mount string, incomingWins, force bool, suffix string, known func(string, statKey) (string, bool), fsync bool, rv *receiver) *committer {
	return &committer{root: root, dirs: dirCache{root: root}, mount: mount, incomingWins: incomingWins, force: force,
		suffix: suffix, known: known, fsync: fsync, touched: map[string]bool{}, rv: rv, done: map[string]bool{},
		learned: map[string]keyed{}, replaced: map[string]bool{}}
}

func conflictSuffix(now int64) string {
	return conflictInfix + timeStamp(now)
}

// current is what a path holds now.
type current struct {
	exists  bool
	st      unix.Stat_t
	kind    Kind
	special bool
	link    string
	hash    string
	hashed  bool
}

func (c *committer) look(dfd int, name string) (*current, error) {
	st, exists, err := lstatAt(dfd, name)
	if err != nil {
		return nil, err
	}
	cur := &current{exists: exists, st: st}
	if !exists {
		return cur, nil
	}
	k, ok := kindOf(&st)
	cur.kind, cur.special = k, !ok
	if k == KindSymlink {
		if cur.link, err = readlinkAt(dfd, name); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

func (c *committer) hashOf(dfd int, name, rel string, cur *current) string {
	if cur.hashed {
		return cur.hash
	}
	cur.hashed = true
	if h, ok := c.known(rel, keyOf(&cur.st)); ok {
		cur.hash = h
		return h
	}
	h, _, stable, err := hashRegular(dfd, name, &cur.st)
	if err != nil {
		return "" // unreadable: never equal to anything, so it is kept
	}
	cur.hash = h
	if stable {
		c.learned[rel] = keyed{Path: rel, Key: keyOf(&cur.st), Hash: h}
	}
	return h
}

// matches reports whether cur holds exactly e (ekey: e's stat key on this side, if known).
func (c *committer) matches(dfd int, name, rel string, cur *current, e *Entry, ekey *statKey) bool {
	if !cur.exists || cur.special || cur.kind != e.Kind {
		return false
	}
	switch e.Kind {
	case KindDir:
		return true
	case KindSymlink:
		return cur.link == e.Link
	}
	if cur.st.Mode&modeMask != e.Mode || cur.st.Size != e.Size {
		return false
	}
	if ekey != nil && *ekey == keyOf(&cur.st) {
		return true
	}
	return c.hashOf(dfd, name, rel, cur) == e.Hash
}

var errRace = errors.New("the path changed while it was applied")

// renameNoReplace renames without replacing an existing target (plain rename where the
// file system has no RENAME_NOREPLACE, after a check).
func renameNoReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Renameat2(oldDir, oldName, newDir, newName, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, exists, lerr := lstatAt(newDir, newName); lerr != nil || exists {
			return unix.EEXIST
		}
		return unix.Renameat(oldDir, oldName, newDir, newName)
	}
	return err
}

// valid lists the learned keys still true: the path was not written since.
func (c *committer) valid() []keyed {
	var out []keyed
	for rel, k := range c.learned {
		if !c.replaced[rel] {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// place puts in at name in dfd. replace: an existing non-directory there is replaced
// atomically; otherwise the name must be free (errRace if it is not).
func (c *committer) place(dfd int, name string, in *incoming, replace bool) error {
	c.replaced[in.Path] = true
	switch in.Kind {
	case KindDir:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return errRace
			}
			return err
		}
		return unix.Fchmodat(dfd, name, in.Mode|0o700, 0)
	case KindSymlink:
		tmp := randomName()
		if err := unix.Symlinkat(in.Link, dfd, tmp); err != nil {
			return err
		}
		var err error
		if replace {
			err = unix.Renameat(dfd, tmp, dfd, name)
		} else {
			err = renameNoReplace(dfd, tmp, dfd, name)
		}
		if err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			if errors.Is(err, unix.EEXIST) {
				return errRace
			}
		}
		return err
	default:
		var err error
		if replace {
			err = unix.Renameat(c.root, in.tmp, dfd, name)
		} else {
			err = renameNoReplace(c.root, in.tmp, dfd, name)
		}
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return errRace
			}
			if errors.Is(err, unix.EXDEV) {
				return fmt.Errorf("%w (the directory is on another file system than the mount's root)", err)
			}
			return err
		}
		c.rv.committed(in.tmp)
		return nil
	}
}

// conflictName is name with the conflict suffix (and a counter), cut to fit a file name.
func conflictName(name, suffix string, i int) string {
	s := suffix
	if i > 1 {
		s += "-" + strconv.Itoa(i)
	}
	if len(name)+len(s) > maxNameBytes {
		name = name[:maxNameBytes-len(s)]
		for len(name) > 0 && !utf8.ValidString(name) {
			name = name[:len(name)-1]
		}
	}
	return name + s
}

// free finds a conflict name not in use in dfd and lets use claim it (EEXIST: try the next).
func (c *committer) free(dfd int, name string, use func(candidate string) error) (string, error) {
	for i := 1; i <= 100; i++ {
		cand := conflictName(name, c.suffix, i)
		err := use(cand)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, errRace) {
			continue
		}
		return cand, err
	}
	return "", fmt.Errorf("no free name for a conflict copy of %s", name)
}

func (c *committer) fail(rel string, err error) {
	c.errors = append(c.errors, PathError{Path: rel, Err: err.Error()})
}

func (c *committer) parent(rel string, create bool) (int, string, string, error) {
	dirRel, name := splitRel(rel)
	dfd, err := c.dirs.get(dirRel, create)
	return dfd, dirRel, name, err
}

func kindWord(k Kind) string {
	switch k {
	case KindDir:
		return "directory"
	case KindSymlink:
		return "symlink"
	}
	return "file"
}

// put applies one incoming entry; exp is the base entry at its path (nil: absent).
func (c *committer) put(in *incoming, exp *Entry, ekey *statKey) {
	for attempt := 0; attempt < 3; attempt++ {
		err := c.putOnce(in, exp, ekey)
		if errors.Is(err, errRace) {
			continue
		}
		if err != nil {
			c.fail(in.Path, err)
		}
		return
	}
	c.fail(in.Path, errRace)
}

func (c *committer) putOnce(in *incoming, exp *Entry, ekey *statKey) error {
	dfd, dirRel, name, err := c.parent(in.Path, true)
	if err != nil {
		return fmt.Errorf("its directory cannot be opened (a file or symlink where a directory should be?): %w", err)
	}
	cur, err := c.look(dfd, name)
	if err != nil {
		return err
	}
	c.touched[dirRel] = true
	switch {
	case !cur.exists:
		if err := c.place(dfd, name, in, false); err != nil {
			return err
		}
		c.done[in.Path] = true
		return nil
	case in.Kind == KindDir && cur.kind == KindDir:
		if cur.st.Mode&modeMask != in.Mode|0o700 {
			if err := unix.Fchmodat(dfd, name, in.Mode|0o700, 0); err != nil {
				return err
			}
		}
		c.done[in.Path] = true
		return nil
	case c.matches(dfd, name, in.Path, cur, &in.Entry, nil):
		// Already there (both sides made the same change). Its stat key on this side is
		// now known for the content, if hashOf had to read it.
		c.done[in.Path] = true
		return nil
	case c.force || (exp != nil && c.matches(dfd, name, in.Path, cur, exp, ekey)):
		err := c.replace(dfd, name, in.Path, cur, in)
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			break // a directory holding entries the base does not know: keep both
		}
		if err == nil {
			c.done[in.Path] = true
		}
		return err
	}
	return c.conflict(dfd, dirRel, name, cur, in)
}

// replace puts in where cur (the base's version, or any with force) is.
func (c *committer) replace(dfd int, name, rel string, cur *current, in *incoming) error {
	if cur.kind == KindDir {
		if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil {
			return err
		}
		c.dirs.forget(rel)
		return c.place(dfd, name, in, false)
	}
	if in.Kind == KindDir {
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			return err
		}
		return c.place(dfd, name, in, false)
	}
	return c.place(dfd, name, in, true)
}

func (c *committer) conflict(dfd int, dirRel, name string, cur *current, in *incoming) error {
	rel := in.Path
	what := "a " + kindWord(in.Kind)
	if cur.special {
		what = "something that is not a file, directory or symlink"
	}
	if c.incomingWins {
		// The sandbox end: the sandbox's version is renamed aside, boxd's takes the path.
		aside, err := c.free(dfd, name, func(cand string) error { return renameNoReplace(dfd, name, dfd, cand) })
		if err != nil {
			return fmt.Errorf("move the sandbox's version aside: %w", err)
		}
		c.dirs.forget(rel)
		if err := c.place(dfd, name, in, false); err != nil {
			return err
		}
		copyRel := join(dirRel, aside)
		c.done[rel] = true
		c.conflicts = append(c.conflicts, Conflict{Path: rel, Copy: copyRel,
			Note: fmt.Sprintf("changed in the sandbox and on boxd's side since the last sync: boxd's %s is at the path, the sandbox's version was kept as %s", kindWord(in.Kind), copyRel)})
		return nil
	}
	// boxd's end: boxd's version stays, the sandbox's is written next to it.
	if in.Kind == KindDir {
		c.done[rel] = true
		c.conflicts = append(c.conflicts, Conflict{Path: rel,
			Note: fmt.Sprintf("the sandbox made a directory where boxd's side has %s changed since the last sync: boxd's version stays; the sandbox's directory is moved aside in the sandbox on the next sync", what)})
		return nil
	}
	cp, err := c.free(dfd, name, func(cand string) error { return c.place(dfd, cand, in, false) })
	if err != nil {
		return fmt.Errorf("write the sandbox's version next to boxd's: %w", err)
	}
	copyRel := join(dirRel, cp)
	c.done[rel] = true
	c.conflicts = append(c.conflicts, Conflict{Path: rel, Copy: copyRel,
		Note: fmt.Sprintf("changed in the sandbox and on boxd's side since the last sync: boxd's version stays at the path, the sandbox's %s is %s", kindWord(in.Kind), copyRel)})
	return nil
}

// remove applies one deletion; exp is the base entry at rel.
func (c *committer) remove(rel string, exp *Entry, ekey *statKey) {
	dfd, dirRel, name, err := c.parent(rel, false)
	if errors.Is(err, unix.ENOENT) {
		c.done[rel] = true // its directory is gone already
		return
	}
	if err != nil {
		c.fail(rel, fmt.Errorf("its directory cannot be opened: %w", err))
		return
	}
	cur, err := c.look(dfd, name)
	if err != nil {
		c.fail(rel, err)
		return
	}
	if !cur.exists {
		c.done[rel] = true
		return
	}
	if !c.force && (exp == nil || !c.matches(dfd, name, rel, cur, exp, ekey)) {
		c.done[rel] = true
		note := "deleted in the sandbox but changed on boxd's side since the last sync: boxd's version is kept"
		if c.incomingWins {
			note = "deleted on boxd's side but changed in the sandbox since the last sync: the sandbox's version is kept"
		}
		c.conflicts = append(c.conflicts, Conflict{Path: rel, Note: note})
		return
	}
	c.touched[dirRel] = true
	flags := 0
	if cur.kind == KindDir {
		flags = unix.AT_REMOVEDIR
	}
	c.replaced[rel] = true
	if err := unix.Unlinkat(dfd, name, flags); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			c.done[rel] = true // it holds entries the base does not know: they keep it
			return
		}
		c.fail(rel, err)
		return
	}
	c.dirs.forget(rel)
	c.done[rel] = true
}

// commit applies deletions (children first) then entries (parents first).
func (c *committer) commit(ctx context.Context, deletes []string, puts []*incoming, expect func(rel string) (*Entry, *statKey)) error {
	defer c.dirs.close()
	dels := append([]string(nil), deletes...)
	sort.Sort(sort.Reverse(sort.StringSlice(dels)))
	for _, rel := range dels {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, k := expect(rel)
		c.remove(rel, e, k)
	}
	ordered := append([]*incoming(nil), puts...)
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].Path < ordered[j].Path })
	for _, in := range ordered {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, k := expect(in.Path)
		c.put(in, e, k)
	}
	if c.fsync {
		for rel := range c.touched {
			if fd, err := c.dirs.get(rel, false); err == nil {
				_ = fsyncDir(fd)
			}
		}
	}
	return nil
}
