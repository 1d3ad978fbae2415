// Package ociimage builds multi-architecture FROM-scratch images as one OCI image index and
// pushes them to a registry, without a container engine: each architecture's static Go binaries
// are cross-compiled on the host (CGO_ENABLED=0, no emulation) and put in a single layer with
// go-containerregistry. The same inputs give the same digests (fixed timestamps, -trimpath), so
// a digest can be pinned in the chart and checked.
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Label keys of the OCI image spec (annotations.md) set on every image config and the index.
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelLicenses = "org.opencontainers.image.licenses"
	LabelTitle    = "org.opencontainers.image.title"
	LabelDesc     = "org.opencontainers.image.description"
)

// Binary is one Go main package compiled into the image at Path (absolute, e.g. "/boxd").
type Binary struct {
	Package string // Go package, e.g. ./boxd/cmd/boxd
	Path    string // where it lives in the image
}

// Spec is what an image index is built from.
type Spec struct {
	Architectures []string // GOARCH values, each one linux/<arch> image
	Binaries      []Binary
	Dirs          []string // empty directories, mode 1777 (e.g. /tmp for a FROM-scratch image)
	Labels        map[string]string
	Entrypoint    []string
	Cmd           []string
	ExposedPorts  []string // "5410/tcp"
	User          string
	Created       time.Time // the image's timestamp (layers and config): fixed so digests repeat
	ModuleDir     string    // where `go build` runs (the module root)
}

// Validate names the first field that cannot produce an image.
func (s Spec) Validate() error {
	if len(s.Architectures) == 0 {
		return errors.New("spec.architectures: empty: name at least one GOARCH (amd64, arm64)")
	}
	if len(s.Binaries) == 0 {
		return errors.New("spec.binaries: empty: an image FROM scratch needs at least one binary")
	}
	for i, b := range s.Binaries {
		if b.Package == "" || !strings.HasPrefix(b.Path, "/") {
			return fmt.Errorf("spec.binaries[%d]: package %q at path %q: both are required, the path absolute", i, b.Package, b.Path)
		}
	}
	for _, k := range []string{LabelSource, LabelVersion, LabelRevision, LabelLicenses} {
		if s.Labels[k] == "" {
			return fmt.Errorf("spec.labels[%q]: empty: every image carries its source, version, revision and licenses", k)
		}
	}
	return nil
}

// CrossBuild compiles every binary of spec for linux/goarch into dir (dir/<base of Path>):
// static (CGO_ENABLED=0), -trimpath, stripped, no VCS stamp, so the bytes depend only on the
// sources and the Go toolchain.
func CrossBuild(ctx context.Context, spec Spec, goarch, dir string) (map[string]string, error) {
	out := make(map[string]string, len(spec.Binaries))
	for _, b := range spec.Binaries {
		dst := filepath.Join(dir, filepath.Base(b.Path))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", dst, b.Package)
		cmd.Dir = spec.ModuleDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s for linux/%s: %w\n%s", b.Package, goarch, err, msg)
		}
		out[b.Path] = dst
	}
	return out, nil
}

// layer is one tar layer holding files (image path -> host path, mode 0755) and dirs (1777).
func layer(files map[string]string, dirs []string, created time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, d := range dirs {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o1777, ModTime: created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header of %s: %w", d, err)
		}
	}
	for _, p := range paths {
		data, err := os.ReadFile(files[p])
		if err != nil {
			return nil, fmt.Errorf("read %s for %s: %w", files[p], p, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header of %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return l, nil
}

// Image is one linux/<arch> image: the layer of its binaries and the config of spec.
func Image(spec Spec, goarch string, files map[string]string) (v1.Image, error) {
	l, err := layer(files, spec.Dirs, spec.Created)
	if err != nil {
		return nil, fmt.Errorf("linux/%s: %w", goarch, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: spec.Created}, CreatedBy: "ociimage: static Go binaries " + strings.Join(sortedKeys(files), " ")}})
	if err != nil {
		return nil, fmt.Errorf("linux/%s: append layer: %w", goarch, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("linux/%s: config: %w", goarch, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	if goarch == "arm64" {
		cf.Variant = "v8"
	}
	cf.Created = v1.Time{Time: spec.Created}
	cf.Config.Labels = spec.Labels
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.User = spec.User
	if len(spec.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.ExposedPorts {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("linux/%s: set config: %w", goarch, err)
	}
	return img, nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Build cross-compiles spec for each architecture under workDir and returns the image index
// (one manifest per linux/<arch>, the labels also as the index's annotations).
func Build(ctx context.Context, spec Spec, workDir string) (v1.ImageIndex, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, arch := range spec.Architectures {
		dir := filepath.Join(workDir, arch)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("work dir for linux/%s: %w", arch, err)
		}
		files, err := CrossBuild(ctx, spec, arch, dir)
		if err != nil {
			return nil, err
		}
		img, err := Image(spec, arch, files)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("linux/%s: config: %w", arch, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, spec.Labels).(v1.ImageIndex), nil
}

// Registry is where images go: host:port, credentials, and the CA that signed its certificate
// (empty = the system roots).
type Registry struct {
	Host     string
	Username string
	Password string
	CAFile   string
}

// Options are the go-containerregistry remote options for r.
func (r Registry) Options(ctx context.Context) ([]remote.Option, error) {
	opts := []remote.Option{remote.WithContext(ctx)}
	if r.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}))
	}
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry CA file %s: %w", r.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA file %s: no PEM certificate in it", r.CAFile)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts = append(opts, remote.WithTransport(t))
	}
	return opts, nil
}

// Push writes idx to r as repo:tag and returns the reference by digest (repo@sha256:...).
func Push(ctx context.Context, r Registry, repo, tag string, idx v1.ImageIndex) (string, error) {
	ref, err := name.NewTag(r.Host+"/"+repo+":"+tag, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("image reference %s/%s:%s: %w", r.Host, repo, tag, err)
	}
	opts, err := r.Options(ctx)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", fmt.Errorf("digest of the index: %w", err)
	}
	return ref.Context().Name() + "@" + d.String(), nil
}
