//go:build release

package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/ociimage"
)

// keyring is a throwaway GnuPG home with one signing key, exported in the formats helm reads.
type keyring struct {
	uid, secret, public string
}

func newKeyring(t *testing.T, ctx context.Context, dir, uid string) keyring {
	t.Helper()
	home := filepath.Join(dir, "gnupg")
	require.NoError(t, os.MkdirAll(home, 0o700))
	gpg := func(args ...string) []byte {
		cmd := exec.CommandContext(ctx, "gpg", append([]string{"--batch", "--homedir", home}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "gpg %v: %s", args, stderr.String())
		return out
	}
	gpg("--passphrase", "", "--quick-gen-key", uid, "rsa3072", "sign", "never")
	k := keyring{uid: uid, secret: filepath.Join(dir, "secring.gpg"), public: filepath.Join(dir, "pubring.gpg")}
	require.NoError(t, os.WriteFile(k.secret, gpg("--export-secret-keys"), 0o600))
	require.NoError(t, os.WriteFile(k.public, gpg("--export"), 0o644))
	return k
}

// pkg runs `make package` signed by k into out and returns the archive's path.
func pkg(t *testing.T, ctx context.Context, repo, out string, k keyring) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "make", "-s", "package", "PACKAGE_DIR="+out)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "SIGN_KEY="+k.uid, "SIGN_KEYRING="+k.secret)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	require.NoError(t, err, "make package: %s", stderr.String())
	tgz := strings.TrimSpace(string(b))
	require.FileExists(t, tgz)
	require.FileExists(t, tgz+".prov")
	return tgz
}

// tamper copies the chart archive src to dst with a comment appended to values.yaml and the
// provenance file of src beside it: a chart changed after it was signed.
func tamper(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		if h.Name == "langbot/values.yaml" {
			b = append(b, []byte("\n# changed after signing\n")...)
			h.Size = int64(len(b))
			changed = true
		}
		require.NoError(t, tw.WriteHeader(h))
		_, err = tw.Write(b)
		require.NoError(t, err)
	}
	require.True(t, changed, "langbot/values.yaml is in %s", src)
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.WriteFile(dst, buf.Bytes(), 0o644))
	prov, err := os.ReadFile(src + ".prov")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst+".prov", prov, 0o644))
}

// helmCLI runs one helm binary with its own config, cache and registry login under dir.
type helmCLI struct {
	bin, dir string
	reg      ociimage.Registry
}

func (h helmCLI) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(h.dir, "config"), "HELM_CACHE_HOME="+filepath.Join(h.dir, "cache"),
		"HELM_DATA_HOME="+filepath.Join(h.dir, "data"), "HELM_REGISTRY_CONFIG="+filepath.Join(h.dir, "registry.json"),
		"KUBECONFIG="+filepath.Join(h.dir, "no-cluster"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSignedChartFromOCI packages the chart with provenance (`make package`, a key generated
// here), pushes it to the real registry with each Helm major, and installs it from there with
// --verify against the public keyring; an archive changed after signing and one signed by
// another key are refused.
func TestSignedChartFromOCI(t *testing.T) {
	ctx := t.Context()
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)
	reg := startRegistry(t, ctx, repo)
	work := t.TempDir()
	signer := newKeyring(t, ctx, filepath.Join(work, "signer"), "langbot-k8s release test <release@langbot-k8s.invalid>")
	stranger := newKeyring(t, ctx, filepath.Join(work, "stranger"), "someone else <other@langbot-k8s.invalid>")

	good := pkg(t, ctx, repo, filepath.Join(work, "dist"), signer)
	version, err := ociimage.ChartVersion(filepath.Join(repo, "charts/langbot"))
	require.NoError(t, err)
	require.Equal(t, "langbot-"+version+".tgz", filepath.Base(good))
	other := pkg(t, ctx, repo, filepath.Join(work, "dist-stranger"), stranger)
	tampered := filepath.Join(work, "dist-tampered", filepath.Base(good))
	tamper(t, good, tampered)

	// Helm 3's `install --dry-run=client` still asks the cluster for its version (no cluster
	// here: the e2e suite installs for real); Helm 4's does not, so it installs offline too.
	for _, tc := range []struct {
		name    string
		offline bool
	}{{"helm", false}, {"helm4", true}} {
		h := helmCLI{bin: tool(t, ctx, repo, tc.name), dir: filepath.Join(work, tc.name), reg: reg}
		major := tc.name
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.run(ctx, "", "verify", good, "--keyring", signer.public)
			require.NoError(t, err, "helm verify of the packaged archive: %s", out)

			oci := func(repoPath string) string { return "oci://" + reg.Host + "/" + major + "/" + repoPath }
			pull := func(repoPath string) (string, error) {
				return h.run(ctx, "", "pull", oci(repoPath)+"/langbot", "--version", version, "--verify",
					"--keyring", signer.public, "--ca-file", reg.CAFile, "-d", t.TempDir())
			}
			out, err = h.run(ctx, "", "push", good, oci("charts"), "--ca-file", reg.CAFile)
			require.Error(t, err, "push without logging in is refused: %s", out)
			assert.Contains(t, out, "basic credential not found", "the registry asks for basic auth")

			out, err = h.run(ctx, reg.Password+"\n", "registry", "login", reg.Host, "--ca-file", reg.CAFile,
				"-u", reg.Username, "--password-stdin")
			require.NoError(t, err, "helm registry login: %s", out)
			for path, tgz := range map[string]string{"charts": good, "tampered": tampered, "stranger": other} {
				out, err = h.run(ctx, "", "push", tgz, oci(path), "--ca-file", reg.CAFile)
				require.NoError(t, err, "helm push %s: %s", tgz, out)
			}

			out, err = pull("charts")
			require.NoError(t, err, "helm pull --verify: %s", out)
			assert.Contains(t, out, "Signed by: "+signer.uid)
			out, err = h.run(ctx, "", "template", "langbot", oci("charts")+"/langbot", "--version", version, "--verify",
				"--keyring", signer.public, "--ca-file", reg.CAFile)
			require.NoError(t, err, "helm template --verify: %s", out)
			assert.Contains(t, out, "kind: Deployment")
			install := func(repoPath string) (string, error) {
				return h.run(ctx, "", "install", "langbot", oci(repoPath)+"/langbot", "--version", version, "--verify",
					"--keyring", signer.public, "--ca-file", reg.CAFile, "--dry-run=client")
			}
			if tc.offline {
				out, err = install("charts")
				require.NoError(t, err, "helm install --verify --dry-run=client: %s", out)
				assert.Contains(t, out, "NAME: langbot")
			}

			out, err = pull("tampered")
			require.Error(t, err, "an archive changed after signing is refused: %s", out)
			assert.Contains(t, out, "sha256 sum does not match")
			out, err = install("tampered")
			require.Error(t, err, "install --verify of the changed archive is refused: %s", out)
			assert.Contains(t, out, "sha256 sum does not match", "refused by the verification, before any cluster is asked")

			out, err = pull("stranger")
			require.Error(t, err, "a chart signed by a key outside the keyring is refused: %s", out)
			assert.Contains(t, out, "unknown entity")
		})
	}
}
