package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const digest = "sha256:d0d9b16c926051ee79564fe2c867fab6bcfc6d49c00f34a5f1c09770e73b39c5"

// chartYAML is a Chart.yaml with the given version, appVersion, images block and prerelease
// annotation (omitted when empty).
func chartYAML(version, appVersion, images, prerelease string) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: v2\nname: langbot\nversion: " + version + "\nappVersion: \"" + appVersion + "\"\nannotations:\n")
	if prerelease != "" {
		b.WriteString("  artifacthub.io/prerelease: \"" + prerelease + "\"\n")
	}
	b.WriteString("  artifacthub.io/images: |\n")
	for _, l := range strings.Split(strings.TrimSpace(images), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return []byte(b.String())
}

func images(langbot, boxd string) string {
	return "- name: langbot\n  image: " + langbot + "\n- name: boxd\n  image: " + boxd
}

func TestCheckTag(t *testing.T) {
	good := images("docker.io/rockchin/langbot:v4.10.8", "ghcr.io/langbot-k8s/boxd:1.2.0@"+digest)
	for _, tc := range []struct {
		name  string
		tag   string
		chart []byte
		want  Release
		err   string // substring of the error; "" = accepted
	}{
		{name: "release", tag: "v1.2.0", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			want: Release{Version: "1.2.0", AppVersion: "4.10.8"}},
		{name: "pre-release marked", tag: "v1.2.0-rc.1",
			chart: chartYAML("1.2.0-rc.1", "4.10.8", images("docker.io/rockchin/langbot:v4.10.8", "ghcr.io/langbot-k8s/boxd:1.2.0-rc.1@"+digest), "true"),
			want:  Release{Version: "1.2.0-rc.1", AppVersion: "4.10.8", Prerelease: true}},
		{name: "langbot pinned by digest too", tag: "v1.2.0",
			chart: chartYAML("1.2.0", "4.10.8", images("docker.io/rockchin/langbot:v4.10.8@"+digest, "ghcr.io/langbot-k8s/boxd:1.2.0@"+digest), ""),
			want:  Release{Version: "1.2.0", AppVersion: "4.10.8"}},
		{name: "tag of another version", tag: "v1.3.0", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			err: `tag "v1.3.0" does not release Chart.yaml version "1.2.0": set version: 1.3.0`},
		{name: "tag without v", tag: "1.2.0", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			err: `tag "1.2.0": a release tag is "v" + a SemVer 2 version`},
		{name: "tag with build metadata", tag: "v1.2.0+build.1", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			err: `tag "v1.2.0+build.1"`},
		{name: "tag of a branch name", tag: "main", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			err: "tag v1.2.0 for this chart"},
		{name: "leading zero", tag: "v01.2.0", chart: chartYAML("1.2.0", "4.10.8", good, ""),
			err: `tag "v01.2.0"`},
		{name: "chart version not semver", tag: "v1.2", chart: chartYAML("1.2", "4.10.8", good, ""),
			err: `version "1.2" is not a SemVer 2 version`},
		{name: "chart version empty", tag: "v1.2.0", chart: chartYAML("", "4.10.8", good, ""),
			err: "version is empty"},
		{name: "appVersion with v", tag: "v1.2.0", chart: chartYAML("1.2.0", "v4.10.8", good, ""),
			err: `appVersion "v4.10.8": set it to the LangBot release without its "v"`},
		{name: "appVersion empty", tag: "v1.2.0", chart: chartYAML("1.2.0", "", good, ""),
			err: `appVersion ""`},
		{name: "langbot image of another appVersion", tag: "v1.2.0",
			chart: chartYAML("1.2.0", "4.11.0", good, ""),
			err:   "artifacthub.io/images langbot is \"docker.io/rockchin/langbot:v4.10.8\": set image: docker.io/rockchin/langbot:v4.11.0"},
		{name: "boxd of another version", tag: "v1.2.0",
			chart: chartYAML("1.2.0", "4.10.8", images("docker.io/rockchin/langbot:v4.10.8", "ghcr.io/langbot-k8s/boxd:1.1.0@"+digest), ""),
			err:   "boxd is \"ghcr.io/langbot-k8s/boxd:1.1.0@sha256:"},
		{name: "boxd without digest", tag: "v1.2.0",
			chart: chartYAML("1.2.0", "4.10.8", images("docker.io/rockchin/langbot:v4.10.8", "ghcr.io/langbot-k8s/boxd:1.2.0"), ""),
			err:   "make image-digest"},
		{name: "boxd missing", tag: "v1.2.0",
			chart: chartYAML("1.2.0", "4.10.8", "- name: langbot\n  image: docker.io/rockchin/langbot:v4.10.8", ""),
			err:   "artifacthub.io/images has no boxd entry"},
		{name: "pre-release not marked", tag: "v1.2.0-rc.1",
			chart: chartYAML("1.2.0-rc.1", "4.10.8", images("docker.io/rockchin/langbot:v4.10.8", "ghcr.io/langbot-k8s/boxd:1.2.0-rc.1@"+digest), ""),
			err:   `artifacthub.io/prerelease is "": set it to "true"`},
		{name: "not yaml", tag: "v1.2.0", chart: []byte("version: [1.2.0\n"), err: "parse Chart.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CheckTag(tc.tag, tc.chart)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

const changelog = "# Changelog\n\nIntro text.\n\n" +
	"## Unreleased\n\n### Added\n- next thing\n\n### Upgrading\n- nothing\n\n" +
	"## [1.2.0] - 2027-01-05\n\n### Added\n- a value\n\n```yaml\n## not a heading\nkey: 1\n```\n\n### Upgrading\n- **restarts** langbot\n\n" +
	"## 1.1.0 (2026-12-01)\n\n### Fixed\n- a bug\n\n### Upgrading\n- nothing\n\n" +
	"## 1.0.0\n\n\n\n" +
	"## 0.9.0\n\n### Added\n- first\n\n" +
	"## Notes about versions\n\nnot an entry\n"

func TestNotes(t *testing.T) {
	for _, tc := range []struct {
		name, changelog, version string
		want                     string
		err                      string
	}{
		{name: "bracketed heading with date, fenced heading kept", changelog: changelog, version: "1.2.0",
			want: "### Added\n- a value\n\n```yaml\n## not a heading\nkey: 1\n```\n\n### Upgrading\n- **restarts** langbot\n"},
		{name: "heading with date in parentheses", changelog: changelog, version: "1.1.0",
			want: "### Fixed\n- a bug\n\n### Upgrading\n- nothing\n"},
		{name: "missing entry", changelog: changelog, version: "1.3.0",
			err: `no "## 1.3.0" entry: move the Unreleased notes under "## 1.3.0"`},
		{name: "empty entry", changelog: changelog, version: "1.0.0", err: `the "## 1.0.0" entry is empty`},
		{name: "entry without Upgrading", changelog: changelog, version: "0.9.0",
			err: `the "## 0.9.0" entry has no "### Upgrading" section`},
		{name: "Unreleased is not a version", changelog: changelog, version: "Unreleased", err: `version "Unreleased"`},
		{name: "tag instead of version", changelog: changelog, version: "v1.2.0", err: `version "v1.2.0"`},
		{name: "duplicate entry", changelog: "## 1.0.0\n\n### Upgrading\n- x\n\n## 1.0.0\n\n### Upgrading\n- y\n", version: "1.0.0",
			err: `line 6: a second "1.0.0" entry`},
		{name: "entry ends at a level-2 heading naming no version", changelog: "## 1.0.0\n### Upgrading\n- x\n## See also\nother\n", version: "1.0.0",
			want: "### Upgrading\n- x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Notes([]byte(tc.changelog), tc.version)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// The project's own CHANGELOG.md parses, and every version entry in it has its Upgrading
// section (the rule its header states), so any of them could be released.
func TestProjectChangelog(t *testing.T) {
	b, err := os.ReadFile("../../CHANGELOG.md")
	require.NoError(t, err)
	order, _, err := Entries(b)
	require.NoError(t, err)
	require.NotEmpty(t, order)
	for _, v := range order {
		if v == "Unreleased" {
			continue
		}
		_, err := Notes(b, v)
		assert.NoError(t, err, "entry %s", v)
	}
}

// The subcommands print what the workflow reads and refuse bad invocations naming the flag.
func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{nil, "name a subcommand"},
		{[]string{"publish"}, `unknown subcommand "publish"`},
		{[]string{"tag"}, "-tag is empty"},
		{[]string{"tag", "-tag", "v1.0.0", "-chart", t.TempDir()}, "read chart metadata"},
		{[]string{"notes", "-version", "1.0.0", "-changelog", t.TempDir() + "/none.md"}, "read changelog"},
	} {
		err := run(tc.args)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.err)
	}
}
