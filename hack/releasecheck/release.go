package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// semver is SemVer 2.0.0 without build metadata (the regular expression of semver.org, less its
// `+build` part): the chart version is also the boxd image's tag, and an OCI tag cannot hold '+'.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$`)

// Images the chart's artifacthub.io/images annotation must list, tagged by the release rules.
const (
	langbotImage = "docker.io/rockchin/langbot" // tag "v" + appVersion (values.yaml langbot.image.tag)
	boxdImage    = "ghcr.io/langbot-k8s/boxd"   // tag = chart version, pinned by index digest
)

// Release is what a version tag releases.
type Release struct {
	Version    string // the chart version, the tag without its "v"
	AppVersion string // the LangBot release the chart targets
	Prerelease bool   // the version has a pre-release part (1.2.0-rc.1)
}

// chartMeta is the part of Chart.yaml the release rules read.
type chartMeta struct {
	Version     string            `json:"version"`
	AppVersion  string            `json:"appVersion"`
	Annotations map[string]string `json:"annotations"`
}

// CheckTag checks that tag releases the chart whose Chart.yaml is chartYAML: the tag is "v" +
// the chart version, a SemVer 2 version without build metadata; appVersion is LangBot's release
// without a "v" (the chart prefixes it); artifacthub.io/images lists langbot at "v" + appVersion
// and boxd at the chart version with a digest; a pre-release version is marked
// artifacthub.io/prerelease "true".
func CheckTag(tag string, chartYAML []byte) (Release, error) {
	var c chartMeta
	if err := yaml.Unmarshal(chartYAML, &c); err != nil {
		return Release{}, fmt.Errorf("parse Chart.yaml: %w", err)
	}
	if c.Version == "" {
		return Release{}, errors.New("version is empty: set the chart's version")
	}
	if !semver.MatchString(c.Version) {
		return Release{}, fmt.Errorf("version %q is not a SemVer 2 version without build metadata (MAJOR.MINOR.PATCH[-PRERELEASE]): fix the chart's version", c.Version)
	}
	if !strings.HasPrefix(tag, "v") || !semver.MatchString(strings.TrimPrefix(tag, "v")) {
		return Release{}, fmt.Errorf("tag %q: a release tag is \"v\" + a SemVer 2 version without build metadata: tag v%s for this chart", tag, c.Version)
	}
	if v := strings.TrimPrefix(tag, "v"); v != c.Version {
		return Release{}, fmt.Errorf("tag %q does not release Chart.yaml version %q: set version: %s in charts/langbot/Chart.yaml (with its CHANGELOG.md entry and `make image-digest`) or tag v%s", tag, c.Version, v, c.Version)
	}
	if c.AppVersion == "" || strings.HasPrefix(c.AppVersion, "v") {
		return Release{}, fmt.Errorf("appVersion %q: set it to the LangBot release without its \"v\" (the chart tags the image \"v\" + appVersion)", c.AppVersion)
	}
	var images []struct{ Name, Image string }
	if err := yaml.Unmarshal([]byte(c.Annotations["artifacthub.io/images"]), &images); err != nil {
		return Release{}, fmt.Errorf("annotations.artifacthub.io/images: %w", err)
	}
	want := map[string]*regexp.Regexp{
		"langbot": regexp.MustCompile("^" + regexp.QuoteMeta(langbotImage+":v"+c.AppVersion) + "(@sha256:[0-9a-f]{64})?$"),
		"boxd":    regexp.MustCompile("^" + regexp.QuoteMeta(boxdImage+":"+c.Version) + "@sha256:[0-9a-f]{64}$"),
	}
	hint := map[string]string{
		"langbot": langbotImage + ":v" + c.AppVersion,
		"boxd":    boxdImage + ":" + c.Version + "@sha256:<digest> (`make image-digest`)",
	}
	seen := map[string]bool{}
	for _, im := range images {
		re, ok := want[im.Name]
		if !ok {
			continue
		}
		seen[im.Name] = true
		if !re.MatchString(im.Image) {
			return Release{}, fmt.Errorf("annotations.artifacthub.io/images %s is %q: set image: %s", im.Name, im.Image, hint[im.Name])
		}
	}
	for _, n := range []string{"langbot", "boxd"} {
		if !seen[n] {
			return Release{}, fmt.Errorf("annotations.artifacthub.io/images has no %s entry: add name: %s, image: %s", n, n, hint[n])
		}
	}
	pre := strings.Contains(c.Version, "-")
	if pre && c.Annotations["artifacthub.io/prerelease"] != "true" {
		return Release{}, fmt.Errorf("version %s is a pre-release but annotations.artifacthub.io/prerelease is %q: set it to \"true\"", c.Version, c.Annotations["artifacthub.io/prerelease"])
	}
	return Release{Version: c.Version, AppVersion: c.AppVersion, Prerelease: pre}, nil
}

// heading matches a level-2 Markdown heading naming a version: "## 1.2.0", "## [1.2.0]",
// optionally followed by a date ("## 1.2.0 - 2027-01-05", "## [1.2.0] (2027-01-05)").
var heading = regexp.MustCompile(`^## +\[?([^\]\s]+)\]?(?:\s+(?:-|\().*)?\s*$`)

// upgrading is the sub-heading every entry carries (CHANGELOG.md's own rule).
var upgrading = regexp.MustCompile(`(?m)^### +Upgrading\s*$`)

// Entries splits a changelog into its level-2 entries (heading name -> body without the
// heading, leading and trailing blank lines removed), in file order. Lines inside fenced code
// blocks are never headings. A name given twice is an error.
func Entries(changelog []byte) ([]string, map[string]string, error) {
	var order []string
	bodies := map[string]*strings.Builder{}
	var cur *strings.Builder
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(changelog))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case fence != "":
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
		case strings.HasPrefix(trimmed, "```"), strings.HasPrefix(trimmed, "~~~"):
			fence = trimmed[:3]
		default:
			if m := heading.FindStringSubmatch(line); m != nil {
				if _, dup := bodies[m[1]]; dup {
					return nil, nil, fmt.Errorf("line %d: a second %q entry: merge the two", n, m[1])
				}
				order = append(order, m[1])
				cur = &strings.Builder{}
				bodies[m[1]] = cur
				continue
			}
			if strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "# ") {
				cur = nil // a level-1 heading or a level-2 one that names no version ends the entry
				continue
			}
		}
		if cur != nil {
			cur.WriteString(line)
			cur.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read changelog: %w", err)
	}
	out := make(map[string]string, len(bodies))
	for k, b := range bodies {
		out[k] = strings.Trim(b.String(), "\n")
	}
	return order, out, nil
}

// Notes is the body of version's entry in changelog: the release notes. A missing entry, an
// empty one or one without its "### Upgrading" section is refused, naming the fix.
func Notes(changelog []byte, version string) (string, error) {
	if !semver.MatchString(version) {
		return "", fmt.Errorf("version %q: want the chart's SemVer version (MAJOR.MINOR.PATCH[-PRERELEASE]), not a tag or a name", version)
	}
	_, entries, err := Entries(changelog)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	body, ok := entries[version]
	if !ok {
		return "", fmt.Errorf("no \"## %s\" entry: move the Unreleased notes under \"## %s\" (with its ### Upgrading section) before releasing", version, version)
	}
	if strings.TrimSpace(body) == "" {
		return "", fmt.Errorf("the \"## %s\" entry is empty: write what changed and its ### Upgrading section", version)
	}
	if !upgrading.MatchString(body) {
		return "", fmt.Errorf("the \"## %s\" entry has no \"### Upgrading\" section: add one (renamed or removed values, what restarts or is regenerated; \"nothing\" is an answer)", version)
	}
	return body + "\n", nil
}
