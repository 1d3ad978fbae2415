// Package skills is the Box skill store (§11): skill packages under
// <skills_root>/tenants/<namespace>, their SKILL.md front matter, file access inside a
// package (§10.4) and zip uploads (§11.9-§11.11).
//
// Errors carry the protocol's message text (the server adds the class prefix LangBot matches
// on). Beyond the reference runtime:
//   - every write is atomic: a temporary file in the same directory, fsync, rename;
//   - zip installs extract into a staging directory on the same file system and move each
//     package into place with one rename, so an install that fails or is killed half-way
//     leaves no half-written skill behind (staging leftovers are swept on the next install);
//   - an entry file (SKILL.md) that is a symlink pointing outside its package is ignored,
//     and file listings never stat through a symlink that leaves the package.
package skills

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Limits of §11 (fixed by the runtime, not configurable per tenant).
const (
	MaxTextBytes          = 1 << 20 // SKILL.md and skill files
	MaxListTextBytes      = 16 << 20
	MaxDiscoveredSkills   = 1000
	MaxScanEntries        = 10000
	MaxListedFiles        = 1000
	MaxDirectoryEntries   = 10000
	ListDepth             = 6
	ScanDepth             = 2
	maxSkillNameRunes     = 64
	entryFilePreferred    = "SKILL.md"
	entryFileAlternative  = "skill.md"
	defaultUploadStemName = "uploaded-skill"
)

// Skill is the skill object of §6.9; SourcePath is set on zip previews only.
type Skill struct {
	Name          string  `json:"name"`
	DisplayName   string  `json:"display_name"`
	Description   string  `json:"description"`
	Instructions  string  `json:"instructions"`
	PackageRoot   string  `json:"package_root"`
	EntryFile     string  `json:"entry_file"`
	PythonProject bool    `json:"python_project"`
	CreatedAt     string  `json:"created_at"`
	UpdatedAt     string  `json:"updated_at"`
	SourcePath    *string `json:"source_path,omitempty"`

	// rel is the package directory relative to the directory it was discovered from (the
	// tenant root for the store's own skills): the store reopens it from there.
	rel string
}

func (s Skill) textBytes() int {
	return len(s.Name) + len(s.DisplayName) + len(s.Description) + len(s.Instructions) +
		len(s.PackageRoot) + len(s.EntryFile) + len(s.CreatedAt) + len(s.UpdatedAt)
}

// ValidateName applies §11.13 and returns the trimmed name.
func ValidateName(raw string) (string, error) {
	name := strings.TrimSpace(raw)
	if name == "" {
		return "", errors.New("Skill name is required")
	}
	rest := strings.NewReplacer("-", "", "_", "").Replace(name)
	ok := rest != ""
	for _, r := range rest {
		if !unicode.IsLetter(r) && !unicode.IsNumber(r) {
			ok = false
			break
		}
	}
	if !ok {
		return "", errors.New("Skill name can only contain letters, numbers, hyphens and underscores")
	}
	if utf8.RuneCountInString(name) > maxSkillNameRunes {
		return "", errors.New("Skill name cannot exceed 64 characters")
	}
	return name, nil
}

// ParseFrontMatter splits SKILL.md content into metadata and instructions (§11.2).
func ParseFrontMatter(content string) (map[string]any, string, error) {
	if !strings.HasPrefix(content, "---") {
		return map[string]any{}, content, nil
	}
	lines := splitLinesKeepEnds(content)
	if strings.TrimSpace(lines[0]) != "---" {
		return map[string]any{}, content, nil
	}
	for i := 1; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "---" {
			continue
		}
		meta := strings.Join(lines[1:i], "")
		instructions := strings.TrimLeft(strings.Join(lines[i+1:], ""), "\n")
		var parsed any
		if err := yaml.Unmarshal([]byte(meta), &parsed); err != nil {
			return nil, "", fmt.Errorf("invalid SKILL.md front matter: %w", err)
		}
		m, _ := parsed.(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		return m, instructions, nil
	}
	return map[string]any{}, content, nil
}

// splitLinesKeepEnds splits after every \n, \r\n or \r (Python's splitlines(keepends=True)
// for the separators a SKILL.md can realistically hold).
func splitLinesKeepEnds(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			out = append(out, s[start:i+1])
			start = i + 1
		case '\r':
			end := i + 1
			if end < len(s) && s[end] == '\n' {
				end++
			}
			out = append(out, s[start:end])
			start = end
			i = end - 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// Metadata is what create/update write into the front matter; nil fields are omitted.
type Metadata struct {
	Name, DisplayName, Description *string
}

// BuildSkillMD renders SKILL.md: block-style front matter in the order name, display_name,
// description (blank values omitted), a blank line, then the instructions (§11.2).
func BuildSkillMD(meta Metadata, instructions string) (string, error) {
	node := &yaml.Node{Kind: yaml.MappingNode}
	for _, kv := range []struct {
		key string
		val *string
	}{{"name", meta.Name}, {"display_name", meta.DisplayName}, {"description", meta.Description}} {
		if kv.val == nil || strings.TrimSpace(*kv.val) == "" {
			continue
		}
		node.Content = append(node.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: kv.key},
			&yaml.Node{Kind: yaml.ScalarNode, Value: *kv.val})
	}
	if len(node.Content) == 0 {
		return instructions, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(node); err != nil {
		return "", fmt.Errorf("render SKILL.md front matter: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("render SKILL.md front matter: %w", err)
	}
	return "---\n" + strings.TrimSpace(buf.String()) + "\n---\n\n" + instructions, nil
}

// readText reads name, a regular file of the directory d, as UTF-8 text of at most
// MaxTextBytes (see dir.readRegular: never through a symlink, never blocking on a FIFO).
// Errors other than the two text errors are the OS's (errNotRegular for a non-regular file).
func readText(d *dir, name, subject string) (string, unix.Stat_t, error) {
	data, st, err := d.readRegular(name, MaxTextBytes)
	switch {
	case errors.Is(err, errTooLarge):
		return "", st, fmt.Errorf("%s exceeds the %d-byte limit", subject, MaxTextBytes)
	case err != nil:
		return "", st, err
	}
	if !utf8.Valid(data) {
		return "", st, fmt.Errorf("%s is not valid UTF-8 text", subject)
	}
	return string(data), st, nil
}

// fileTimes returns a file's ctime and mtime.
func fileTimes(st unix.Stat_t) (ctime, mtime time.Time) {
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec), time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
}

// osError renders an OS error as Python's OSError str(): "[Errno N] Message: 'path'".
func osError(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	msg := errno.Error()
	if msg != "" {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("[Errno %d] %s: '%s'", int(errno), msg, pe.Path)
	case errors.As(err, &le):
		return fmt.Errorf("[Errno %d] %s: '%s' -> '%s'", int(errno), msg, le.Old, le.New)
	}
	return err
}

// realpath resolves every symlink of p (non-strict: missing components are kept).
func realpath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		abs = filepath.Clean(p)
	}
	return mounts.Resolve(abs)
}
