package skills

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
)

// Store is one tenant's view of the skill store: every operation stays inside Root.
// A Store is not safe for concurrent use; the caller serialises all store operations of the
// process (§11.12).
type Store struct {
	// Root is the tenant root <store root>/tenants/<namespace>, symlinks resolved.
	Root string
	// staging is <store root>/.staging: zip extraction happens there (same file system as
	// every tenant root, outside all of them, so nothing half-extracted is ever listed).
	staging string
	// hooks lets the interrupted-install test stop a real process at a chosen point.
	hooks Hooks
}

// Hooks are test seams called at the points an install can be interrupted.
type Hooks struct {
	// AfterExtractFile is called after each file is written into the staging directory.
	AfterExtractFile func(name string)
	// AfterInstallPackage is called after each package has been moved into place.
	AfterInstallPackage func(target string)
}

// Open returns the store of one tenant namespace under storeRoot.
func Open(storeRoot, namespace string, hooks Hooks) (*Store, error) {
	ns := strings.TrimSpace(namespace)
	if ns == "" || strings.ContainsAny(ns, `/\`) || ns == "." || ns == ".." {
		return nil, errors.New("Invalid Box skill namespace")
	}
	return &Store{Root: filepath.Join(storeRoot, "tenants", ns), staging: filepath.Join(storeRoot, ".staging"), hooks: hooks}, nil
}

// within reports whether resolved path p is the tenant root or below it.
func (s *Store) within(p string) bool { return mounts.Within(p, s.Root) }

// findEntry returns the entry file of a package directory, or "". An entry file that is a
// symlink must resolve to a regular file inside the package.
func findEntry(dir string) string {
	for _, name := range []string{entryFilePreferred, entryFileAlternative} {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if lst, err := os.Lstat(p); err == nil && lst.Mode()&fs.ModeSymlink != 0 {
			if !mounts.Within(realpath(p), realpath(dir)) {
				continue
			}
		}
		return name
	}
	return ""
}

type found struct{ dir, entry string }

// discover walks breadth-first from root (§11.4): a directory with an entry file is a
// package and is not descended into; symlinked directories are never followed.
func discover(root string, maxDepth int) ([]found, error) {
	type item struct {
		dir   string
		depth int
	}
	var out []found
	queue := []item{{root, 0}}
	seen := map[string]bool{}
	scanned := 0
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		dir, err := filepath.Abs(cur.dir)
		if err != nil {
			continue
		}
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if entry := findEntry(dir); entry != "" {
			out = append(out, found{dir, entry})
			if len(out) > MaxDiscoveredSkills {
				return nil, errors.New("Skill discovery exceeded the configured package limit")
			}
			continue
		}
		if cur.depth >= maxDepth {
			continue
		}
		entries, err := readDirLimited(dir, MaxScanEntries-scanned)
		scanned += len(entries)
		if errors.Is(err, errTooManyEntries) {
			return nil, errors.New("Skill discovery exceeded the configured entry limit")
		}
		if err != nil {
			continue // unreadable directories are skipped
		}
		for _, e := range entries {
			if e.Type().IsDir() {
				queue = append(queue, item{filepath.Join(dir, e.Name()), cur.depth + 1})
			}
		}
	}
	return out, nil
}

var errTooManyEntries = errors.New("too many directory entries")

// readDirLimited reads at most limit entries of dir, sorted by name; more → errTooManyEntries.
func readDirLimited(dir string, limit int) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var all []fs.DirEntry
	for {
		batch, err := f.ReadDir(256)
		all = append(all, batch...)
		if len(all) > limit {
			return all, errTooManyEntries
		}
		if errors.Is(err, io.EOF) || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name() < all[j].Name() })
	return all, nil
}

// load turns one package into a skill object (§11.3).
func load(dir, entry string) (Skill, error) {
	root := realpath(dir)
	entryPath := filepath.Join(root, entry)
	content, err := readTextLimited(realpath(entryPath), "Skill entry file "+entry)
	if err != nil {
		return Skill{}, err
	}
	meta, instructions, err := ParseFrontMatter(content)
	if err != nil {
		return Skill{}, err
	}
	rawName := filepath.Base(root)
	if pyval.Truthy(meta["name"]) {
		rawName = pyval.Str(meta["name"])
	}
	name, err := ValidateName(rawName)
	if err != nil {
		return Skill{}, err
	}
	display := name
	if pyval.Truthy(meta["display_name"]) {
		display = pyval.Str(meta["display_name"])
	}
	desc := ""
	if pyval.Truthy(meta["description"]) {
		desc = pyval.Str(meta["description"])
	}
	st, err := os.Stat(entryPath)
	if err != nil {
		return Skill{}, osError(err)
	}
	ctime, mtime := fileTimes(st)
	return Skill{
		Name: name, DisplayName: strings.TrimSpace(display), Description: strings.TrimSpace(desc),
		Instructions: instructions, PackageRoot: root, EntryFile: entry, PythonProject: isPythonProject(root),
		CreatedAt: pyval.IsoFormat(ctime), UpdatedAt: pyval.IsoFormat(mtime),
	}, nil
}

func isPythonProject(root string) bool {
	for _, f := range []string{"requirements.txt", "pyproject.toml", "setup.py", "setup.cfg"} {
		if st, err := os.Stat(filepath.Join(root, f)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	st, err := os.Stat(filepath.Join(root, ".venv"))
	return err == nil && st.IsDir()
}

// List returns every loadable skill of the tenant, newest first (§11.4); it creates the
// tenant root when missing.
func (s *Store) List() ([]Skill, error) {
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return nil, osError(err)
	}
	pkgs, err := discover(s.Root, ListDepth)
	if err != nil {
		return nil, err
	}
	skills := []Skill{}
	text := 0
	for _, p := range pkgs {
		sk, err := load(p.dir, p.entry)
		if err != nil {
			continue // unloadable packages are skipped, as the reference does
		}
		text += sk.textBytes()
		if text > MaxListTextBytes {
			return nil, errors.New("Skill listing exceeds the configured text limit")
		}
		skills = append(skills, sk)
	}
	sort.SliceStable(skills, func(i, j int) bool { return skills[i].UpdatedAt > skills[j].UpdatedAt })
	return skills, nil
}

// Get returns the first listed skill called name, or nil.
func (s *Store) Get(name string) (*Skill, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Name == name {
			return &all[i], nil
		}
	}
	return nil, nil
}

func (s *Store) require(name string) (*Skill, error) {
	sk, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if sk == nil {
		return nil, fmt.Errorf("Skill \"%s\" not found", name)
	}
	return sk, nil
}

// managedInstallRoot returns the top-level directory under the tenant root that holds
// pkg, or "" when pkg is not strictly under the tenant root.
func (s *Store) managedInstallRoot(pkg string) string {
	if pkg == "" || pkg == s.Root || !strings.HasPrefix(pkg, s.Root+"/") {
		return ""
	}
	top, _, _ := strings.Cut(strings.TrimPrefix(pkg, s.Root+"/"), "/")
	if top == "" || top == "." || top == ".." {
		return ""
	}
	return filepath.Join(s.Root, top)
}

// normalize is the reference's package-root normalisation: trimmed, absolute, realpath.
func normalize(p string) string {
	p = strings.TrimSpace(p)
	if p == "" {
		return ""
	}
	return realpath(p)
}

// Field is an optional string field of a create/update request: Present when the key was
// sent, Null when its value was null.
type Field struct {
	Present, Null bool
	Value         string
}

// Request is the `skill` object of create/update.
type Request struct {
	Name, DisplayName, Description, Instructions, PackageRoot Field
}

// ResolvePackageRoot returns the trusted package root of a tenant skill (used for the
// read-only mounts of grant-enforced sessions): it comes from the store's own discovery,
// never from a caller-supplied path.
func (s *Store) ResolvePackageRoot(name string) (string, error) {
	name, err := ValidateName(name)
	if err != nil {
		return "", err
	}
	sk, err := s.require(name)
	if err != nil {
		return "", err
	}
	root := normalize(sk.PackageRoot)
	if !s.within(root) {
		return "", errors.New("skill package must stay within the Workspace skill root")
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return "", fmt.Errorf("Skill \"%s\" package directory is unavailable", name)
	}
	return root, nil
}

// Create implements §11.5.
func (s *Store) Create(req Request) (*Skill, error) {
	name, err := ValidateName(req.Name.Value)
	if err != nil {
		return nil, err
	}
	existing, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return nil, fmt.Errorf("Skill with name \"%s\" already exists", name)
	}
	pkg := ""
	if !req.PackageRoot.Null {
		pkg = normalize(req.PackageRoot.Value)
	}
	if pkg != "" && !s.within(pkg) {
		return nil, errors.New("package_root must stay within the Workspace skill root")
	}
	managed := normalize(filepath.Join(s.Root, name))
	target := managed
	var imported *Skill
	switch {
	case pkg != "" && s.managedInstallRoot(pkg) != "":
		if st, err := os.Stat(pkg); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("Directory does not exist: %s", pkg)
		}
		target = pkg
		if imported, err = readPackage(target); err != nil {
			return nil, err
		}
	case pkg != "" && pkg != managed:
		if st, err := os.Stat(pkg); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("Directory does not exist: %s", pkg)
		}
		if _, err := os.Lstat(managed); err == nil {
			return nil, fmt.Errorf("Skill directory already exists: %s", managed)
		}
		if err := copyTree(pkg, managed); err != nil {
			return nil, err
		}
		if imported, err = readPackage(managed); err != nil {
			return nil, err
		}
	default:
		if err := os.MkdirAll(managed, 0o755); err != nil {
			return nil, osError(err)
		}
	}
	pick := func(f Field, fromImport string) string {
		if !f.Present || f.Null {
			if imported != nil {
				return fromImport
			}
			return ""
		}
		if imported != nil && strings.TrimSpace(f.Value) == "" {
			return fromImport
		}
		return f.Value
	}
	var imp Skill
	if imported != nil {
		imp = *imported
	}
	display, desc := pick(req.DisplayName, imp.DisplayName), pick(req.Description, imp.Description)
	if err := writeSkillMD(target, Metadata{Name: &name, DisplayName: &display, Description: &desc},
		pick(req.Instructions, imp.Instructions)); err != nil {
		return nil, err
	}
	created, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if created == nil {
		return nil, fmt.Errorf("Failed to create skill \"%s\"", name)
	}
	return created, nil
}

// readPackage loads the package at dir for an import (§11.5 step 3).
func readPackage(dir string) (*Skill, error) {
	entry := findEntry(dir)
	if entry == "" {
		return nil, fmt.Errorf("No SKILL.md found in %s", dir)
	}
	sk, err := load(dir, entry)
	if err != nil {
		return nil, err
	}
	return &sk, nil
}

// Update implements §11.6.
func (s *Store) Update(name string, req Request) (*Skill, error) {
	sk, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if sk == nil {
		return nil, fmt.Errorf("Skill \"%s\" not found", name)
	}
	requested := sk.Name
	if req.Name.Present && !req.Name.Null && req.Name.Value != "" {
		requested = strings.TrimSpace(req.Name.Value)
	}
	if requested != sk.Name {
		return nil, errors.New("Renaming skills is not supported")
	}
	if p := strings.TrimSpace(req.PackageRoot.Value); !req.PackageRoot.Null && p != "" && normalize(p) != normalize(sk.PackageRoot) {
		return nil, errors.New("Updating package_root is not supported; recreate the skill to import a different package")
	}
	keep := func(f Field, cur string) *string {
		switch {
		case !f.Present:
			return &cur
		case f.Null:
			return nil
		}
		v := f.Value
		return &v
	}
	instructions := sk.Instructions
	if req.Instructions.Present {
		instructions = req.Instructions.Value // null arrives as ""
	}
	meta := Metadata{Name: &sk.Name, DisplayName: keep(req.DisplayName, sk.DisplayName), Description: keep(req.Description, sk.Description)}
	if err := writeSkillMD(sk.PackageRoot, meta, instructions); err != nil {
		return nil, err
	}
	updated, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if updated == nil {
		return nil, fmt.Errorf("Skill \"%s\" not found after update", name)
	}
	return updated, nil
}

// Delete implements §11.7: the whole top-level directory holding the package goes.
func (s *Store) Delete(name string) error {
	sk, err := s.require(name)
	if err != nil {
		return err
	}
	top := s.managedInstallRoot(normalize(sk.PackageRoot))
	if top == "" {
		return errors.New("Only managed skills under the Box skills root can be deleted")
	}
	// Move aside first (one rename), then remove: a crash half-way never leaves a
	// half-deleted package that still lists.
	aside := filepath.Join(s.staging, "delete-"+randomSuffix())
	if err := os.MkdirAll(s.staging, 0o700); err != nil || os.Rename(top, aside) != nil {
		_ = os.RemoveAll(top)
		return nil
	}
	_ = os.RemoveAll(aside)
	return nil
}

// Scan implements §11.7 scan: one package at or below path (depth 2).
func (s *Store) Scan(path string) (*Skill, error) {
	p := normalize(path)
	if p == "" || !s.within(p) {
		return nil, errors.New("scan path must stay within the Workspace skill root")
	}
	if st, err := os.Stat(p); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("Directory does not exist: %s", p)
	}
	pkgs, err := discover(p, ScanDepth)
	if err != nil {
		return nil, err
	}
	switch len(pkgs) {
	case 0:
		return nil, fmt.Errorf("No SKILL.md found in %s or its subdirectories (max depth: %d)", p, ScanDepth)
	case 1:
		sk, err := load(pkgs[0].dir, pkgs[0].entry)
		if err != nil {
			return nil, err
		}
		return &sk, nil
	}
	dirs := make([]string, len(pkgs))
	for i, f := range pkgs {
		dirs[i] = f.dir
	}
	return nil, fmt.Errorf("Multiple skill directories found in %s. Please choose a more specific path: %s", p, strings.Join(dirs, ", "))
}

// writeSkillMD writes SKILL.md into dir atomically.
func writeSkillMD(dir string, meta Metadata, instructions string) error {
	dir = normalize(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return osError(err)
	}
	content, err := BuildSkillMD(meta, instructions)
	if err != nil {
		return err
	}
	return atomicWrite(filepath.Join(dir, entryFilePreferred), []byte(content))
}
