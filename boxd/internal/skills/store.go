package skills

import (
	"errors"
	"fmt"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
)

// Store is one tenant's view of the skill store: every operation stays inside Root.
// A Store is not safe for concurrent use; the caller serialises the store operations of one
// tenant (stores of different tenants share nothing but the staging directory, where each
// operation has its own randomly named entries).
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

// openRoot opens the tenant root (created when missing): every operation of the store goes
// through this handle (see dir).
func (s *Store) openRoot() (*dir, error) {
	if err := os.MkdirAll(s.Root, perm.Dir); err != nil {
		return nil, osError(err)
	}
	d, err := openDirPath(s.Root)
	return d, osError(err)
}

// relOf returns p (a path already inside the tenant root) relative to the tenant root.
func (s *Store) relOf(p string) string {
	rel, err := filepath.Rel(s.Root, p)
	if err != nil {
		return "."
	}
	return filepath.ToSlash(rel)
}

// findEntry returns the entry file of a package directory, or "": a regular file (a symlink
// is not an entry file, whatever it points to).
func findEntry(d *dir) string {
	for _, name := range []string{entryFilePreferred, entryFileAlternative} {
		if st, err := d.lstat(name); err == nil && isRegular(st) {
			return name
		}
	}
	return ""
}

// found is a package discovered below a base directory: rel is relative to the base.
type found struct{ rel, path, entry string }

// discover walks breadth-first from start (relative to base) (§11.4): a directory with an
// entry file is a package and is not descended into; symlinks are never followed, each
// directory is opened from base by openat (see dir).
func discover(base *dir, start string, maxDepth int) ([]found, error) {
	type item struct {
		rel   string
		depth int
	}
	var out []found
	queue := []item{{start, 0}}
	scanned := 0
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		d, err := base.sub(cur.rel)
		if err != nil {
			continue // gone, replaced or unreadable: skipped
		}
		if entry := findEntry(d); entry != "" {
			d.close()
			out = append(out, found{cur.rel, base.join(cur.rel), entry})
			if len(out) > MaxDiscoveredSkills {
				return nil, errors.New("Skill discovery exceeded the configured package limit")
			}
			continue
		}
		if cur.depth >= maxDepth {
			d.close()
			continue
		}
		entries, err := d.readDir(MaxScanEntries - scanned)
		d.close()
		scanned += len(entries)
		if errors.Is(err, errTooManyEntries) {
			return nil, errors.New("Skill discovery exceeded the configured entry limit")
		}
		if err != nil {
			continue // unreadable directories are skipped
		}
		for _, e := range entries {
			if e.Type().IsDir() {
				queue = append(queue, item{path.Join(cur.rel, e.Name()), cur.depth + 1})
			}
		}
	}
	return out, nil
}

var errTooManyEntries = errors.New("too many directory entries")

// loadFound loads a discovered package (§11.3).
func loadFound(base *dir, f found) (Skill, error) {
	d, err := base.sub(f.rel)
	if err != nil {
		return Skill{}, osError(err)
	}
	defer d.close()
	sk, err := load(d, f.entry)
	sk.rel = f.rel
	return sk, err
}

// load turns the package open at d into a skill object (§11.3).
func load(d *dir, entry string) (Skill, error) {
	content, st, err := readText(d, entry, "Skill entry file "+entry)
	if err != nil {
		return Skill{}, err
	}
	meta, instructions, err := ParseFrontMatter(content)
	if err != nil {
		return Skill{}, err
	}
	rawName := filepath.Base(d.path)
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
	ctime, mtime := fileTimes(st)
	return Skill{
		Name: name, DisplayName: strings.TrimSpace(display), Description: strings.TrimSpace(desc),
		Instructions: instructions, PackageRoot: d.path, EntryFile: entry, PythonProject: isPythonProject(d),
		CreatedAt: pyval.IsoFormat(ctime), UpdatedAt: pyval.IsoFormat(mtime),
	}, nil
}

func isPythonProject(d *dir) bool {
	for _, f := range []string{"requirements.txt", "pyproject.toml", "setup.py", "setup.cfg"} {
		if st, err := d.lstat(f); err == nil && isRegular(st) {
			return true
		}
	}
	st, err := d.lstat(".venv")
	return err == nil && isDir(st)
}

// List returns every loadable skill of the tenant, newest first (§11.4); it creates the
// tenant root when missing.
func (s *Store) List() ([]Skill, error) {
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	return s.list(root)
}

func (s *Store) list(root *dir) ([]Skill, error) {
	pkgs, err := discover(root, ".", ListDepth)
	if err != nil {
		return nil, err
	}
	skills := []Skill{}
	text := 0
	for _, p := range pkgs {
		sk, err := loadFound(root, p)
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
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	return s.getIn(root, name)
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
	root, err := s.openRoot()
	if err != nil {
		return "", err
	}
	defer root.close()
	sk, err := s.requireIn(root, name)
	if err != nil {
		return "", err
	}
	if !s.within(sk.PackageRoot) {
		return "", errors.New("skill package must stay within the Workspace skill root")
	}
	d, err := root.sub(sk.rel)
	if err != nil {
		return "", fmt.Errorf("Skill \"%s\" package directory is unavailable", name)
	}
	d.close()
	return sk.PackageRoot, nil
}

// getIn is Get on an open tenant root.
func (s *Store) getIn(root *dir, name string) (*Skill, error) {
	all, err := s.list(root)
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

// requireIn is getIn for a skill that must exist.
func (s *Store) requireIn(root *dir, name string) (*Skill, error) {
	sk, err := s.getIn(root, name)
	if err != nil {
		return nil, err
	}
	if sk == nil {
		return nil, fmt.Errorf("Skill \"%s\" not found", name)
	}
	return sk, nil
}

// openPackage opens the package directory of a listed skill.
func openPackage(root *dir, sk *Skill) (*dir, error) {
	d, err := root.sub(sk.rel)
	if err != nil {
		return nil, fmt.Errorf("Skill \"%s\" package directory is unavailable", sk.Name)
	}
	return d, nil
}

// Create implements §11.5.
func (s *Store) Create(req Request) (*Skill, error) {
	name, err := ValidateName(req.Name.Value)
	if err != nil {
		return nil, err
	}
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	existing, err := s.getIn(root, name)
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
	managed := filepath.Join(s.Root, name)
	var target *dir
	var imported *Skill
	switch {
	case pkg != "" && s.managedInstallRoot(pkg) != "":
		if target, err = root.sub(s.relOf(pkg)); err != nil {
			return nil, fmt.Errorf("Directory does not exist: %s", pkg)
		}
		if imported, err = readPackage(target); err != nil {
			target.close()
			return nil, err
		}
	case pkg != "" && pkg != managed: // the tenant root itself
		if _, err := root.lstat(name); err == nil {
			return nil, fmt.Errorf("Skill directory already exists: %s", managed)
		}
		if err := copyTree(root, root, name); err != nil {
			return nil, err
		}
		if target, err = root.sub(name); err != nil {
			return nil, osError(err)
		}
		if imported, err = readPackage(target); err != nil {
			target.close()
			return nil, err
		}
	default:
		// Nothing is created for instructions that could never be loaded.
		if _, err := renderSkillMD(Metadata{Name: &name, DisplayName: fieldPtr(req.DisplayName), Description: fieldPtr(req.Description)}, req.Instructions.Value); err != nil {
			return nil, err
		}
		if target, err = root.mkdirAll(name); err != nil {
			return nil, osError(err)
		}
	}
	defer target.close()
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
	created, err := s.getIn(root, name)
	if err != nil {
		return nil, err
	}
	if created == nil {
		return nil, fmt.Errorf("Failed to create skill \"%s\"", name)
	}
	return created, nil
}

func fieldPtr(f Field) *string {
	if f.Null {
		return nil
	}
	return &f.Value
}

// readPackage loads the package open at d for an import (§11.5 step 3).
func readPackage(d *dir) (*Skill, error) {
	entry := findEntry(d)
	if entry == "" {
		return nil, fmt.Errorf("No SKILL.md found in %s", d.path)
	}
	sk, err := load(d, entry)
	if err != nil {
		return nil, err
	}
	return &sk, nil
}

// Update implements §11.6.
func (s *Store) Update(name string, req Request) (*Skill, error) {
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	sk, err := s.requireIn(root, name)
	if err != nil {
		return nil, err
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
	pkg, err := openPackage(root, sk)
	if err != nil {
		return nil, err
	}
	defer pkg.close()
	if err := writeSkillMD(pkg, meta, instructions); err != nil {
		return nil, err
	}
	updated, err := s.getIn(root, name)
	if err != nil {
		return nil, err
	}
	if updated == nil {
		return nil, fmt.Errorf("Skill \"%s\" not found after update", name)
	}
	return updated, nil
}

// Delete implements §11.7: the whole top-level directory holding the package goes. A
// package whose SKILL.md cannot be loaded (over the size limit, not UTF-8, bad front matter:
// written by a sandbox or an older runtime) never lists, so it cannot be found by name; it is
// deleted when name is the managed directory <tenant root>/<name> holding it.
func (s *Store) Delete(name string) error {
	root, err := s.openRoot()
	if err != nil {
		return err
	}
	defer root.close()
	sk, err := s.getIn(root, name)
	if err != nil {
		return err
	}
	var top string
	switch {
	case sk != nil:
		top, _, _ = strings.Cut(sk.rel, "/")
		if !s.within(sk.PackageRoot) || top == "." || top == "" {
			return errors.New("Only managed skills under the Box skills root can be deleted")
		}
	case unloadablePackage(root, name):
		top = name
	default:
		return fmt.Errorf("Skill \"%s\" not found", name)
	}
	// Move aside first (one rename), then remove: a crash half-way never leaves a
	// half-deleted package that still lists. os.RemoveAll works with openat/unlinkat and
	// O_NOFOLLOW below the directory it is given, never following a link in the package.
	aside := "delete-" + randomSuffix()
	if err := os.MkdirAll(s.staging, 0o700); err == nil {
		if staging, err := openDirPath(s.staging); err == nil {
			err = root.rename(top, staging, aside)
			staging.close()
			if err == nil {
				_ = os.RemoveAll(filepath.Join(s.staging, aside))
				return nil
			}
		}
	}
	_ = os.RemoveAll(filepath.Join(s.Root, top))
	return nil
}

// unloadablePackage reports whether name is a directory right under the tenant root holding
// an entry file that does not load.
func unloadablePackage(root *dir, name string) bool {
	if _, err := ValidateName(name); err != nil || name != strings.TrimSpace(name) {
		return false
	}
	d, err := root.sub(name)
	if err != nil {
		return false
	}
	defer d.close()
	entry := findEntry(d)
	if entry == "" {
		return false
	}
	_, err = load(d, entry)
	return err != nil
}

// Scan implements §11.7 scan: one package at or below path (depth 2).
func (s *Store) Scan(path string) (*Skill, error) {
	p := normalize(path)
	if p == "" || !s.within(p) {
		return nil, errors.New("scan path must stay within the Workspace skill root")
	}
	root, err := s.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.close()
	return s.scanIn(root, s.relOf(p))
}

func (s *Store) scanIn(root *dir, rel string) (*Skill, error) {
	p := root.join(rel)
	d, err := root.sub(rel)
	if err != nil {
		return nil, fmt.Errorf("Directory does not exist: %s", p)
	}
	d.close()
	pkgs, err := discover(root, rel, ScanDepth)
	if err != nil {
		return nil, err
	}
	switch len(pkgs) {
	case 0:
		return nil, fmt.Errorf("No SKILL.md found in %s or its subdirectories (max depth: %d)", p, ScanDepth)
	case 1:
		sk, err := loadFound(root, pkgs[0])
		if err != nil {
			return nil, err
		}
		return &sk, nil
	}
	dirs := make([]string, len(pkgs))
	for i, f := range pkgs {
		dirs[i] = f.path
	}
	return nil, fmt.Errorf("Multiple skill directories found in %s. Please choose a more specific path: %s", p, strings.Join(dirs, ", "))
}

// renderSkillMD is BuildSkillMD refusing a file that could never be loaded again (§11.2: an
// entry file over MaxTextBytes makes the package unloadable, and so undeletable by name).
func renderSkillMD(meta Metadata, instructions string) (string, error) {
	content, err := BuildSkillMD(meta, instructions)
	if err != nil {
		return "", err
	}
	if len(content) > MaxTextBytes {
		return "", fmt.Errorf("Skill entry file %s exceeds the %d-byte limit: skill.instructions is %d bytes and SKILL.md would be %d bytes; shorten skill.instructions",
			entryFilePreferred, MaxTextBytes, len(instructions), len(content))
	}
	return content, nil
}

// writeSkillMD writes SKILL.md into the package open at d, atomically.
func writeSkillMD(d *dir, meta Metadata, instructions string) error {
	content, err := renderSkillMD(meta, instructions)
	if err != nil {
		return err
	}
	return atomicWrite(d, entryFilePreferred, []byte(content))
}
