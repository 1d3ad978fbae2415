// Package wsync moves a session's workspace between boxd's disk and a sandbox that does not
// share it (the kubernetes backend's `isolated` workspace mode): the tenant host_path mounted
// at /workspace and every extra mount (skill packages at /workspace/.skills/<name>).
//
// It does what LangBot expects of such a runtime (the e2b semantics: every mount copied in
// before a command, the rw ones copied back after it), with three differences:
//
//   - Incremental. A Session keeps, per tree, the base: what both sides held after the last
//     sync (relative path → kind, mode, size, mtime, SHA-256, symlink target). Push sends only
//     what changed on boxd's side since then, plus deletions, and does not contact the
//     sandbox at all when nothing changed; Pull brings back only what the sandbox changed.
//     A file's hash is recomputed only when its stat identity (device, inode, size, mtime,
//     ctime) changed; ctime is part of it so that a write that restores the mtime is seen.
//   - Bounded. The e2b limits are the defaults (DefaultLimits) and exceeding one is a
//     *backend.Error (BoxError) naming the limit, what was seen and what to do, returned
//     before anything moved; a hostile stream is cut off before anything is committed.
//   - Never losing a write. Every change is applied as compare-and-swap against the base: a
//     path that both sides changed since the last sync keeps both versions (the sandbox's
//     copy next to the original, named <name>.sandbox-conflict-<UTC time>) and is reported.
//
// Both ends work relative to open directory handles and never follow a symbolic link:
// symlinks inside a tree are carried as symlinks, FIFOs, sockets and devices are skipped and
// never opened, names with `..`, absolute names, names in the skip list or under another
// tree are refused, and files are written to a temporary file, fsynced (on boxd's side) and
// renamed into place. The two ends speak through one request and one response stream
// (a framed JSON header, then a tar stream), so the sandbox end can run as
// `boxagent sync` (Serve) on the stdin/stdout of one exec.
package wsync

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// AgentSubcommand is the boxagent argument that runs Serve on stdin/stdout.
const AgentSubcommand = "sync"

// DefaultSkip are the directory names never synced, in either direction (e2b's list).
var DefaultSkip = []string{".git", "__pycache__", ".venv", "node_modules"}

// Limits bound one sync. Push limits count every tree of the session together (what is
// mirrored into the sandbox, not only what changed), pull limits every rw tree together.
type Limits struct {
	// PushMaxFiles: regular files and symlinks in all trees (e2b: 1024).
	PushMaxFiles int `json:"push_max_files"`
	// PushMaxFileBytes: size of one file (e2b: 1 MiB).
	PushMaxFileBytes int64 `json:"push_max_file_bytes"`
	// PushMaxTotalBytes: sum of all file sizes (e2b: 50 MiB).
	PushMaxTotalBytes int64 `json:"push_max_total_bytes"`
	// PullMaxEntries: files, directories and symlinks in the sandbox's rw trees (e2b: 2048).
	PullMaxEntries int `json:"pull_max_entries"`
	// PullMaxFileBytes: size of one file changed in the sandbox (e2b: 10 MiB).
	PullMaxFileBytes int64 `json:"pull_max_file_bytes"`
	// PullMaxTotalBytes: bytes brought back by one pull. e2b has no such limit; boxd's disk
	// is bounded, so the default is 256 MiB.
	PullMaxTotalBytes int64 `json:"pull_max_total_bytes"`
}

// DefaultLimits are e2b's limits (plus PullMaxTotalBytes).
var DefaultLimits = Limits{
	PushMaxFiles:      1024,
	PushMaxFileBytes:  1 << 20,
	PushMaxTotalBytes: 50 << 20,
	PullMaxEntries:    2048,
	PullMaxFileBytes:  10 << 20,
	PullMaxTotalBytes: 256 << 20,
}

// withDefaults fills zero fields with DefaultLimits and refuses negative ones.
func (l Limits) withDefaults() (Limits, error) {
	def := DefaultLimits
	for _, f := range []struct {
		name string
		v    *int64
		d    int64
	}{
		{"push_max_file_bytes", &l.PushMaxFileBytes, def.PushMaxFileBytes},
		{"push_max_total_bytes", &l.PushMaxTotalBytes, def.PushMaxTotalBytes},
		{"pull_max_file_bytes", &l.PullMaxFileBytes, def.PullMaxFileBytes},
		{"pull_max_total_bytes", &l.PullMaxTotalBytes, def.PullMaxTotalBytes},
	} {
		if *f.v < 0 {
			return l, fmt.Errorf("workspace sync limit %s is %d: it must be positive (0 = the default %d)", f.name, *f.v, f.d)
		}
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	for _, f := range []struct {
		name string
		v    *int
		d    int
	}{
		{"push_max_files", &l.PushMaxFiles, def.PushMaxFiles},
		{"pull_max_entries", &l.PullMaxEntries, def.PullMaxEntries},
	} {
		if *f.v < 0 {
			return l, fmt.Errorf("workspace sync limit %s is %d: it must be positive (0 = the default %d)", f.name, *f.v, f.d)
		}
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	return l, nil
}

// Options configure a Session.
type Options struct {
	// Limits: zero fields take DefaultLimits.
	Limits Limits
	// Skip are directory (and file) names never synced; nil = DefaultSkip.
	Skip []string
	// Now names conflict copies; nil = time.Now.
	Now func() time.Time
	// NoFsync skips the fsync of files and directories written on boxd's side (tests and
	// benchmarks only: without it a crash can leave a pulled file empty).
	NoFsync bool
	// Logger receives one line per sync that moved something or found a conflict; nil =
	// slog.Default().
	Logger *slog.Logger
}

// LimitError says which limit a sync exceeded. It is wrapped in a *backend.Error whose
// message is the text LangBot shows (`BoxError: ...`).
type LimitError struct {
	Direction string // "push" (to the sandbox) or "pull" (back from it)
	Limit     string // the Limits field's JSON name, e.g. "push_max_files"
	Max       int64
	Seen      int64  // the count or size seen (for counts: at least this many)
	Path      string // the file, for per-file limits ("<mount path>/<relative path>")
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("workspace sync %s exceeds %s (%d > %d)", e.Direction, e.Limit, e.Seen, e.Max)
}

// limitErr builds the BoxError for e: what was refused, the limit, what was seen, and what
// to do.
func limitErr(e *LimitError, skip []string) error {
	var what, fix string
	skipped := strings.Join(skip, ", ")
	switch e.Limit {
	case "push_max_files":
		what = fmt.Sprintf("the workspace has more than %d files (at least %d; %s are not copied and not counted)", e.Max, e.Seen, skipped)
		fix = "remove files from the workspace or its skills, or raise " + e.Limit
	case "push_max_file_bytes":
		what = fmt.Sprintf("%s is %d bytes, more than the limit of %d bytes per file", e.Path, e.Seen, e.Max)
		fix = "remove or shrink that file, move it into one of " + skipped + ", or raise " + e.Limit
	case "push_max_total_bytes":
		what = fmt.Sprintf("the workspace holds at least %d bytes, more than the limit of %d bytes per sync", e.Seen, e.Max)
		fix = "remove large files from the workspace or its skills, or raise " + e.Limit
	case "pull_max_entries":
		what = fmt.Sprintf("the sandbox's writable mounts hold more than %d entries (at least %d; %s are not copied and not counted)", e.Max, e.Seen, skipped)
		fix = "delete files in the sandbox (or move them out of the workspace, e.g. to /tmp), or raise " + e.Limit
	case "pull_max_file_bytes":
		what = fmt.Sprintf("%s is %d bytes in the sandbox, more than the limit of %d bytes per file", e.Path, e.Seen, e.Max)
		fix = "delete or shrink that file in the sandbox (or move it out of the workspace, e.g. to /tmp), or raise " + e.Limit
	case "pull_max_total_bytes":
		what = fmt.Sprintf("the sandbox changed at least %d bytes, more than the limit of %d bytes per sync", e.Seen, e.Max)
		fix = "delete large files in the sandbox (or move them out of the workspace, e.g. to /tmp), or raise " + e.Limit
	default:
		what, fix = e.Error(), "raise "+e.Limit
	}
	var msg string
	if e.Direction == "push" {
		msg = "workspace sync to the sandbox refused: " + what + "; nothing was copied. " + fix
	} else {
		msg = "workspace sync from the sandbox refused: " + what + "; nothing was copied back and the sandbox's files are unchanged. " + fix
	}
	return &backend.Error{Message: msg, Err: e}
}

// ErrInvalidStream is wrapped by every error about a malformed or hostile stream.
var ErrInvalidStream = errors.New("invalid workspace sync stream")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidStream, fmt.Sprintf(format, args...))
}

// Conflict is a path both sides changed since the last sync.
type Conflict struct {
	// Path is relative to the tree.
	Path string `json:"path"`
	// Copy is where the sandbox's version was kept (relative to the tree, next to Path), ""
	// when nothing had to be copied (a deletion on one side: the changed version is kept).
	Copy string `json:"copy,omitempty"`
	// What happened, for people.
	Note string `json:"note"`
}

// Skipped is an entry a scan left out (not a regular file, directory or symlink, or
// unreadable).
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// PathError is a change that could not be applied (the rest of the sync was).
type PathError struct {
	Path string `json:"path"`
	Err  string `json:"error"`
}

// TreeReport is what one sync did to one tree.
type TreeReport struct {
	MountPath string
	HostPath  string
	// Entries: files, directories and symlinks the scanned side holds.
	Entries int
	// Files, Dirs, Symlinks and Bytes were sent (a file: Bytes counts its content).
	Files, Dirs, Symlinks int
	Bytes                 int64
	// Deleted: deletions sent.
	Deleted   int
	Conflicts []Conflict
	Skipped   []Skipped
	Errors    []PathError
	// Reset: the sandbox did not hold this session's copy (it was replaced): the base was
	// dropped and everything compared afresh.
	Reset bool
}

// Report is what one Push or Pull did.
type Report struct {
	Direction string // "push" or "pull"
	// Exchanged is false when the sandbox was not contacted (a push with nothing to send).
	Exchanged bool
	Trees     []TreeReport
}

// Moved counts what the sync sent: entries and content bytes.
func (r *Report) Moved() (entries int, bytes int64) {
	for _, t := range r.Trees {
		entries += t.Files + t.Dirs + t.Symlinks + t.Deleted
		bytes += t.Bytes
	}
	return entries, bytes
}

// Conflicts lists every conflict with its mount path.
func (r *Report) Conflicts() []string {
	var out []string
	for _, t := range r.Trees {
		for _, c := range t.Conflicts {
			s := t.MountPath + "/" + c.Path + ": " + c.Note
			out = append(out, s)
		}
	}
	return out
}

// Notice is a one-paragraph text for the user when the sync found conflicts or could not
// apply something ("" otherwise), e.g. to append to a command's stderr.
func (r *Report) Notice() string {
	var b strings.Builder
	for _, t := range r.Trees {
		for _, c := range t.Conflicts {
			fmt.Fprintf(&b, "[boxd workspace sync] conflict on %s/%s: %s\n", t.MountPath, c.Path, c.Note)
		}
		for _, e := range t.Errors {
			fmt.Fprintf(&b, "[boxd workspace sync] %s/%s was not synced: %s\n", t.MountPath, e.Path, e.Err)
		}
	}
	return b.String()
}
