package ociimage

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validSpec() Spec {
	return BoxdSpec("/src", "1.2.3", Revision{Commit: "abc", Time: time.Unix(1700000000, 0).UTC()})
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"no architectures", func(s *Spec) { s.Architectures = nil }, "spec.architectures"},
		{"no binaries", func(s *Spec) { s.Binaries = nil }, "spec.binaries: empty"},
		{"relative path", func(s *Spec) { s.Binaries[0].Path = "boxd" }, "spec.binaries[0]"},
		{"no revision", func(s *Spec) { s.Labels[LabelRevision] = "" }, LabelRevision},
		{"no licenses", func(s *Spec) { delete(s.Labels, LabelLicenses) }, LabelLicenses},
	}
	require.NoError(t, validSpec().Validate())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			s.Binaries = append([]Binary(nil), s.Binaries...)
			tt.mutate(&s)
			err := s.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// The same files and spec give the same image digest: what lets Chart.yaml pin it.
func TestImageIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "boxd")
	require.NoError(t, os.WriteFile(bin, []byte("not really a binary"), 0o755))
	files := map[string]string{"/boxd": bin, "/boxagent": bin}
	spec := validSpec()
	a, err := Image(spec, "arm64", files)
	require.NoError(t, err)
	da, err := a.Digest()
	require.NoError(t, err)
	require.NoError(t, os.Chtimes(bin, time.Now(), time.Now()))
	b, err := Image(spec, "arm64", files)
	require.NoError(t, err)
	db, err := b.Digest()
	require.NoError(t, err)
	assert.Equal(t, da, db, "a file's mtime does not reach the image")

	cf, err := a.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "arm64", cf.Architecture)
	assert.Equal(t, "v8", cf.Variant)
	assert.Equal(t, "abc", cf.Config.Labels[LabelRevision])

	spec.Labels = map[string]string{LabelRevision: "def"}
	c, err := Image(spec, "arm64", files)
	require.NoError(t, err)
	dc, err := c.Digest()
	require.NoError(t, err)
	assert.NotEqual(t, da, dc, "the labels are part of the digest")
}

func TestChartImageDigest(t *testing.T) {
	const img = "ghcr.io/langbot-k8s/boxd"
	const d = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	chart := []byte("annotations:\n  artifacthub.io/images: |\n    - name: langbot\n      image: docker.io/rockchin/langbot:v4.10.8\n    - name: boxd\n      image: ghcr.io/langbot-k8s/boxd:0.1.0\n")
	got, err := ChartImageDigest(chart, img)
	require.NoError(t, err)
	assert.Empty(t, got, "no digest pinned yet")

	pinned, err := SetChartImage(chart, img, "0.2.0", d)
	require.NoError(t, err)
	assert.Contains(t, string(pinned), "      image: ghcr.io/langbot-k8s/boxd:0.2.0@"+d+"\n")
	assert.Contains(t, string(pinned), "image: docker.io/rockchin/langbot:v4.10.8\n", "other images untouched")
	got, err = ChartImageDigest(pinned, img)
	require.NoError(t, err)
	assert.Equal(t, d, got)
	again, err := SetChartImage(pinned, img, "0.2.0", d)
	require.NoError(t, err)
	assert.Equal(t, string(pinned), string(again), "idempotent")

	_, err = ChartImageDigest([]byte("annotations: {}\n"), img)
	assert.ErrorContains(t, err, "no entry for "+img)
	_, err = SetChartImage(chart, img, "0.2.0", "md5:xyz")
	assert.ErrorContains(t, err, "want sha256")
}
