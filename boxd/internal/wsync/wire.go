package wsync

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A stream (request or response) is:
//
//	"WSYNC1\n" | frame(header JSON) | [tar stream] | frame(trailer JSON)
//
// where frame = 4-byte big-endian length + bytes. The tar stream (when the header says so)
// holds one record per entry to apply, named "<tree index>/<relative path>": regular files
// (PAX records WSYNC.sha256, the content's hash, and optionally WSYNC.key, the sender's stat
// key), directories and symlinks, nothing else. The trailer counts the records, so a stream
// cut short at a record boundary (which tar alone cannot tell from its end) is refused.
const (
	magic        = "WSYNC1\n"
	maxFrame     = 16 << 20
	paxHash      = "WSYNC.sha256"
	paxKey       = "WSYNC.key"
	maxTrees     = 64
	maxListItems = 1 << 20
)

type wireEntry struct {
	Entry
	Key *statKey `json:"key,omitempty"`
}

type reqTree struct {
	Root    string   `json:"root"`
	Exclude []string `json:"exclude,omitempty"`
	// Synced: the sandbox was sent this tree by this session before (its marker must match,
	// else the sandbox was replaced and the base does not describe it).
	Synced bool `json:"synced,omitempty"`
	// Force (push, ro trees): no compare-and-swap, no conflict copies: boxd's version wins.
	Force bool `json:"force,omitempty"`
	// Base: pull: the whole base; push: the base entries of the paths changed or deleted.
	Base   []wireEntry `json:"base,omitempty"`
	Delete []string    `json:"delete,omitempty"`
}

type request struct {
	Op      string    `json:"op"` // "push" or "pull"
	Session string    `json:"session"`
	Now     int64     `json:"now"` // Unix seconds: names conflict copies
	Skip    []string  `json:"skip"`
	Limits  Limits    `json:"limits"`
	Trees   []reqTree `json:"trees"`
	Tar     bool      `json:"tar,omitempty"`
}

// keyed is a stat key that side learned for the content of hash at path.
type keyed struct {
	Path string  `json:"p"`
	Key  statKey `json:"key"`
	Hash string  `json:"h"`
}

type respTree struct {
	Reset     bool        `json:"reset,omitempty"`
	Entries   int         `json:"entries"`
	Delete    []string    `json:"delete,omitempty"` // pull
	Keys      []keyed     `json:"keys,omitempty"`
	Skipped   []Skipped   `json:"skipped,omitempty"`
	Unknown   []string    `json:"unknown,omitempty"`
	Conflicts []Conflict  `json:"conflicts,omitempty"` // push
	Errors    []PathError `json:"errors,omitempty"`    // push
}

type wireError struct {
	Message string      `json:"message"`
	Limit   *LimitError `json:"limit,omitempty"`
}

type response struct {
	Error *wireError `json:"error,omitempty"`
	Trees []respTree `json:"trees,omitempty"`
	Tar   bool       `json:"tar,omitempty"`
}

type trailer struct {
	Records int `json:"records"`
	// Error: the sender stopped (e.g. a file grew past a limit while it was packed); the
	// receiver discards everything.
	Error *wireError `json:"error,omitempty"`
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return fmt.Errorf("read frame length: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return invalidf("frame of %d bytes (limit %d)", size, maxFrame)
	}
	// Read as the bytes arrive: a length alone does not make the reader allocate it.
	b, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	if len(b) != int(size) {
		return fmt.Errorf("read frame: %w", io.ErrUnexpectedEOF)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("frame: %v", err)
	}
	if dec.More() {
		return invalidf("frame: trailing data")
	}
	return nil
}

func writeMagic(w io.Writer) error {
	_, err := io.WriteString(w, magic)
	return err
}

func readMagic(r io.Reader) error {
	b := make([]byte, len(magic))
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("read stream start: %w", err)
	}
	if string(b) != magic {
		return invalidf("the stream does not start with %q (got %q): not a wsync peer", strings.TrimSpace(magic), b)
	}
	return nil
}

// packer writes the tar records of the entries to send.
type packer struct {
	tw      *tar.Writer
	records int
}

func newPacker(w io.Writer) *packer { return &packer{tw: tar.NewWriter(w)} }

func tarName(tree int, rel string) string { return strconv.Itoa(tree) + "/" + rel }

// sent is what was actually packed for one entry (a file re-read at pack time).
type sent struct {
	Entry
	key   statKey
	keyed bool
}

// pack writes the entry rel of the tree under root as seen now. A file is read (at most
// maxFile bytes, else a *LimitError) and hashed as it is sent; ok is false when the entry
// vanished or changed kind since the scan (nothing was written for it).
func (p *packer) pack(tree, root int, want *scanEntry, maxFile int64, limitPath string) (s sent, ok bool, err error) {
	dirRel, name := splitRel(want.Path)
	dfd, err := openDir(root, dirRel, false)
	if err != nil {
		return s, false, nil // its directory is gone or became something else
	}
	defer unix.Close(dfd)
	st, exists, err := lstatAt(dfd, name)
	if !exists || err != nil {
		return s, false, nil
	}
	kind, _ := kindOf(&st)
	if kind != want.Kind {
		return s, false, nil
	}
	hdr := &tar.Header{Name: tarName(tree, want.Path), Format: tar.FormatPAX, ModTime: time.Unix(0, 0)}
	s.Entry = Entry{Path: want.Path, Kind: kind}
	switch kind {
	case KindDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Mode = int64(st.Mode & modeMask)
		s.Mode = st.Mode & modeMask
	case KindSymlink:
		target, err := readlinkAt(dfd, name)
		if err != nil {
			return s, false, nil
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		s.Link = target
	case KindFile:
		if st.Size > maxFile {
			return s, false, &LimitError{Limit: "file", Max: maxFile, Seen: st.Size, Path: limitPath}
		}
		f, fst, err := openRegular(dfd, name, &st)
		if err != nil {
			return s, false, nil
		}
		data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
		var after unix.Stat_t
		if err == nil {
			err = unix.Fstat(int(f.Fd()), &after)
		}
		f.Close()
		if err != nil {
			return s, false, fmt.Errorf("read %s: %w", limitPath, err)
		}
		if int64(len(data)) > maxFile {
			return s, false, &LimitError{Limit: "file", Max: maxFile, Seen: int64(len(data)), Path: limitPath}
		}
		sum := sha256.Sum256(data)
		s.Hash = hex.EncodeToString(sum[:])
		s.Mode, s.Size, s.MTime = fst.Mode&modeMask, int64(len(data)), fst.Mtim.Nano()
		s.key = keyOf(&fst)
		s.keyed = keyOf(&after) == s.key && s.key.Size == s.Size
		hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, s.Size, int64(s.Mode)
		hdr.ModTime = time.Unix(0, s.MTime)
		hdr.PAXRecords = map[string]string{paxHash: s.Hash}
		if s.keyed {
			hdr.PAXRecords[paxKey] = s.key.String()
		}
		if err := p.tw.WriteHeader(hdr); err != nil {
			return s, false, err
		}
		if _, err := p.tw.Write(data); err != nil {
			return s, false, err
		}
		p.records++
		return s, true, nil
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return s, false, err
	}
	p.records++
	return s, true, nil
}

// finish ends the tar stream and writes the trailer (with stop, the reason the stream is
// abandoned).
func (p *packer) finish(w io.Writer, stop error) error {
	if err := p.tw.Close(); err != nil {
		return err
	}
	t := trailer{Records: p.records}
	if stop != nil {
		t.Error = toWire(stop)
	}
	return writeFrame(w, t)
}

func toWire(err error) *wireError {
	we := &wireError{Message: err.Error()}
	var le *LimitError
	if errors.As(err, &le) {
		we.Limit = le
	}
	return we
}

// err turns a peer's error back into one: a *LimitError when it names a known limit.
func (we *wireError) err() error {
	if le := we.Limit; le != nil && knownLimit(le.Limit) && (le.Direction == "push" || le.Direction == "pull") {
		return le
	}
	msg := we.Message
	if len(msg) > 2000 {
		msg = msg[:2000] + "..."
	}
	return &peerError{msg: msg}
}

// peerError is an error the other end reported.
type peerError struct{ msg string }

func (e *peerError) Error() string { return e.msg }

// incoming is one received entry, staged (files: in a temporary file at the tree's root).
type incoming struct {
	Entry
	key *statKey
	tmp string
}

// receiveLimits bound what one stream may carry.
type receiveLimits struct {
	direction    string // whose limits: "push" or "pull"
	maxRecords   int
	maxFile      int64
	maxTotal     int64
	fileLimit    string // Limits field names, for errors
	totalLimit   string
	recordsLimit string
}

// receiver stages a tar stream into the trees' roots; nothing is visible in a tree until
// commit renames it into place.
type receiver struct {
	roots   []int
	filters []*filter
	mounts  []string // for messages
	limits  receiveLimits
	fsync   bool
	puts    [][]*incoming
	seen    map[string]bool
	staged  map[string]int // temporary name → root handle, until committed
	total   int64
	files   int
}

func knownLimit(name string) bool {
	switch name {
	case "push_max_files", "push_max_file_bytes", "push_max_total_bytes", "pull_max_entries", "pull_max_file_bytes", "pull_max_total_bytes":
		return true
	}
	return false
}

func newReceiver(roots []int, filters []*filter, mounts []string, l receiveLimits, fsync bool) *receiver {
	return &receiver{roots: roots, filters: filters, mounts: mounts, limits: l, fsync: fsync,
		puts: make([][]*incoming, len(roots)), seen: map[string]bool{}, staged: map[string]int{}}
}

// discard removes every staged file not committed.
func (rv *receiver) discard() {
	for name, root := range rv.staged {
		_ = unix.Unlinkat(root, name, 0)
		delete(rv.staged, name)
	}
}

// receive reads the tar stream and the trailer from r, validating and staging every record.
// On error everything staged is removed.
func (rv *receiver) receive(ctx context.Context, r *bufio.Reader) (err error) {
	defer func() {
		if err != nil {
			rv.discard()
		}
	}()
	tr := tar.NewReader(r)
	records := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return invalidf("tar record %d: %v", records+1, err)
		}
		records++
		if records > rv.limits.maxRecords {
			return &LimitError{Direction: rv.limits.direction, Limit: rv.limits.recordsLimit, Max: int64(rv.limits.maxRecords), Seen: int64(records)}
		}
		if err := rv.record(tr, hdr); err != nil {
			return err
		}
	}
	var t trailer
	if err := readFrame(r, &t); err != nil {
		return invalidf("after the tar stream: %v", err)
	}
	if t.Error != nil {
		return t.Error.err()
	}
	if t.Records != records {
		return invalidf("the trailer counts %d records, the tar stream had %d (cut short?)", t.Records, records)
	}
	return nil
}

func (rv *receiver) record(tr *tar.Reader, hdr *tar.Header) error {
	treeStr, rel, ok := strings.Cut(hdr.Name, "/")
	tree, err := strconv.Atoi(treeStr)
	if !ok || err != nil || strconv.Itoa(tree) != treeStr || tree < 0 || tree >= len(rv.roots) {
		return invalidf("tar name %.200q does not start with a tree index below %d", hdr.Name, len(rv.roots))
	}
	if err := rv.filters[tree].check(rel); err != nil {
		return invalidf("tar name %.200q: %v", hdr.Name, err)
	}
	if rv.seen[hdr.Name] {
		return invalidf("tar name %.200q appears twice", hdr.Name)
	}
	rv.seen[hdr.Name] = true
	if hdr.Mode < 0 || hdr.Mode&^int64(modeMask) != 0 && hdr.Typeflag != tar.TypeSymlink {
		return invalidf("%.200q has mode %o (only permission bits are carried)", hdr.Name, hdr.Mode)
	}
	in := &incoming{Entry: Entry{Path: rel, Mode: uint32(hdr.Mode) & modeMask}}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "WSYNC.") && k != paxHash && k != paxKey {
			return invalidf("%.200q has an unknown record %.50q", hdr.Name, k)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if hdr.Size != 0 || hdr.Linkname != "" {
			return invalidf("directory %.200q has content", hdr.Name)
		}
		in.Kind = KindDir
	case tar.TypeSymlink:
		if hdr.Size != 0 || hdr.Linkname == "" || len(hdr.Linkname) > maxLinkBytes || strings.ContainsRune(hdr.Linkname, 0) {
			return invalidf("symlink %.200q has content or a bad target", hdr.Name)
		}
		in.Kind, in.Link, in.Mode = KindSymlink, hdr.Linkname, 0
	case tar.TypeReg:
		if hdr.Linkname != "" {
			return invalidf("file %.200q has a link target", hdr.Name)
		}
		in.Kind, in.Size, in.MTime = KindFile, hdr.Size, hdr.ModTime.UnixNano()
		mount := rv.mounts[tree] + "/" + rel
		if hdr.Size > rv.limits.maxFile {
			return &LimitError{Direction: rv.limits.direction, Limit: rv.limits.fileLimit, Max: rv.limits.maxFile, Seen: hdr.Size, Path: mount}
		}
		rv.total += hdr.Size
		if rv.total > rv.limits.maxTotal {
			return &LimitError{Direction: rv.limits.direction, Limit: rv.limits.totalLimit, Max: rv.limits.maxTotal, Seen: rv.total}
		}
		want := hdr.PAXRecords[paxHash]
		if len(want) != 64 || strings.ToLower(want) != want {
			return invalidf("file %.200q has no valid %s record", hdr.Name, paxHash)
		}
		if _, err := hex.DecodeString(want); err != nil {
			return invalidf("file %.200q has no valid %s record", hdr.Name, paxHash)
		}
		if ks, ok := hdr.PAXRecords[paxKey]; ok {
			k, err := parseKey(ks)
			if err != nil {
				return invalidf("file %.200q: %v", hdr.Name, err)
			}
			in.key = &k
		}
		tmp, err := rv.stage(tree, tr, in, want)
		if err != nil {
			return err
		}
		in.tmp, in.Hash = tmp, want
	default:
		return invalidf("%.200q is of tar type %q: only files, directories and symlinks are synced", hdr.Name, hdr.Typeflag)
	}
	rv.puts[tree] = append(rv.puts[tree], in)
	return nil
}

// stage writes the content of a file record into a new temporary file at the tree's root,
// with the entry's mode and mtime, and checks its hash.
func (rv *receiver) stage(tree int, r io.Reader, in *incoming, want string) (string, error) {
	root := rv.roots[tree]
	var name string
	var fd int
	for {
		name = randomName()
		var err error
		fd, err = unix.Openat(root, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("stage %s/%s: %w", rv.mounts[tree], in.Path, err)
		}
		break
	}
	rv.staged[name] = root
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, in.Size+1))
	if err != nil {
		return "", fmt.Errorf("stage %s/%s: %w", rv.mounts[tree], in.Path, err)
	}
	if n != in.Size {
		return "", invalidf("file %s/%s: %d bytes for a size of %d", rv.mounts[tree], in.Path, n, in.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", invalidf("file %s/%s: content hash %s, the record says %s", rv.mounts[tree], in.Path, got, want)
	}
	if err := unix.Fchmod(fd, in.Mode); err != nil {
		return "", fmt.Errorf("stage %s/%s: chmod: %w", rv.mounts[tree], in.Path, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(in.MTime), unix.NsecToTimespec(in.MTime)}
	if err := unix.UtimesNanoAt(root, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", fmt.Errorf("stage %s/%s: set mtime: %w", rv.mounts[tree], in.Path, err)
	}
	if rv.fsync {
		if err := unix.Fsync(fd); err != nil {
			return "", fmt.Errorf("stage %s/%s: fsync: %w", rv.mounts[tree], in.Path, err)
		}
	}
	rv.files++
	return name, nil
}

// committed marks a staged file as renamed into place.
func (rv *receiver) committed(name string) { delete(rv.staged, name) }
