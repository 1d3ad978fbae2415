//go:build release

package release

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/ociimage"
)

// file extracts path (without the leading slash) from img's flattened file system.
func file(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if h.Name == path {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			return b
		}
	}
	require.Failf(t, "file not in image", "%s", path)
	return nil
}

// TestBoxdImageIndex builds the boxd index of the committed sources, pushes it to the real
// registry, reads it back by digest and checks both images, their labels and binaries, that
// the registry refuses anonymous pulls, and that Chart.yaml pins this digest.
func TestBoxdImageIndex(t *testing.T) {
	ctx := t.Context()
	repoDir, err := filepath.Abs("../..")
	require.NoError(t, err)
	reg := startRegistry(t, ctx, repoDir)

	idx, spec, err := ociimage.BuildBoxd(ctx, repoDir, filepath.Join(repoDir, "charts/langbot"), t.TempDir())
	require.NoError(t, err)
	ref, err := ociimage.Push(ctx, reg, "langbot-k8s/boxd", spec.Labels[ociimage.LabelVersion], idx)
	require.NoError(t, err)
	want, err := idx.Digest()
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(ref, "@"+want.String()), "pushed reference %s", ref)

	opts, err := reg.Options(ctx)
	require.NoError(t, err)
	dref, err := name.NewDigest(ref)
	require.NoError(t, err)

	t.Run("anonymous pull refused", func(t *testing.T) {
		anon, err := (ociimage.Registry{Host: reg.Host, CAFile: reg.CAFile}).Options(ctx)
		require.NoError(t, err)
		_, err = remote.Index(dref, anon...)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "UNAUTHORIZED")
	})

	got, err := remote.Index(dref, opts...)
	require.NoError(t, err)
	im, err := got.IndexManifest()
	require.NoError(t, err)
	gd, err := got.Digest()
	require.NoError(t, err)
	assert.Equal(t, want, gd, "the registry serves the index that was pushed")
	assert.Equal(t, types.OCIImageIndex, im.MediaType)
	assert.Equal(t, spec.Labels, im.Annotations, "the index carries the labels as annotations")
	require.Len(t, im.Manifests, 2, "one manifest per architecture")

	labels := map[string]string{
		ociimage.LabelSource:   "https://github.com/langbot-k8s/langbot-k8s",
		ociimage.LabelLicenses: "Apache-2.0",
	}
	wantVersion, err := ociimage.ChartVersion(filepath.Join(repoDir, "charts/langbot"))
	require.NoError(t, err)
	labels[ociimage.LabelVersion] = wantVersion
	rev, err := ociimage.SourceRevision(ctx, repoDir, ociimage.BoxdSources...)
	require.NoError(t, err)
	labels[ociimage.LabelRevision] = rev.Commit

	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	seen := map[string]bool{}
	for _, m := range im.Manifests {
		require.NotNil(t, m.Platform, "manifest %s has a platform", m.Digest)
		arch := m.Platform.Architecture
		t.Run("linux/"+arch, func(t *testing.T) {
			seen[arch] = true
			assert.Equal(t, "linux", m.Platform.OS)
			assert.Equal(t, types.OCIManifestSchema1, m.MediaType)
			img, err := remote.Image(dref.Context().Digest(m.Digest.String()), opts...)
			require.NoError(t, err)
			cf, err := img.ConfigFile()
			require.NoError(t, err)
			assert.Equal(t, arch, cf.Architecture)
			assert.Equal(t, "linux", cf.OS)
			for k, v := range labels {
				assert.Equal(t, v, cf.Config.Labels[k], "label %s", k)
			}
			assert.Equal(t, []string{"/boxd"}, cf.Config.Entrypoint)
			layers, err := img.Layers()
			require.NoError(t, err)
			assert.Len(t, layers, 1, "FROM scratch: one layer of binaries")
			for _, p := range []string{"boxd", "boxagent"} {
				b := file(t, img, p)
				ef, err := elf.NewFile(strings.NewReader(string(b)))
				require.NoError(t, err, "%s is an ELF binary", p)
				assert.Equal(t, machines[arch], ef.Machine, "%s is built for %s", p, arch)
				for _, prog := range ef.Progs {
					assert.NotEqual(t, elf.PT_INTERP, prog.Type, "%s is static (no interpreter)", p)
				}
			}
			if arch == "amd64" {
				bin := filepath.Join(t.TempDir(), "boxd")
				require.NoError(t, os.WriteFile(bin, file(t, img, "boxd"), 0o755))
				out, err := exec.CommandContext(ctx, bin, "-help").CombinedOutput()
				require.NoError(t, err, "the image's boxd runs here: %s", out)
				assert.Contains(t, string(out), "-ws-control-port", "boxd's usage")
			}
		})
	}
	assert.Equal(t, map[string]bool{"amd64": true, "arm64": true}, seen)

	t.Run("Chart.yaml pins this index", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(repoDir, "charts/langbot/Chart.yaml"))
		require.NoError(t, err)
		pinned, err := ociimage.ChartImageDigest(b, "ghcr.io/langbot-k8s/boxd")
		require.NoError(t, err)
		assert.Equal(t, want.String(), pinned, "Chart.yaml's artifacthub.io/images is stale: run `make image-digest` and commit it")
	})
}
