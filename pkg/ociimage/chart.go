package ociimage

import (
	"fmt"
	"regexp"
	"strings"
)

// The boxd entry of Chart.yaml's artifacthub.io/images annotation:
//
//	image: ghcr.io/langbot-k8s/boxd:0.1.0@sha256:<index digest>
func imageLine(image string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^([ \t]*image:[ \t]*)` + regexp.QuoteMeta(image) + `(?::[^@\s]+)?(?:@(sha256:[0-9a-f]{64}))?[ \t]*$`)
}

// ChartImageDigest is the digest pinned for image (repository without tag) in chartYAML's
// artifacthub.io/images annotation, "" when none is.
func ChartImageDigest(chartYAML []byte, image string) (string, error) {
	m := imageLine(image).FindSubmatch(chartYAML)
	if m == nil {
		return "", fmt.Errorf("Chart.yaml: artifacthub.io/images has no entry for %s: add `image: %s:<version>`", image, image)
	}
	return string(m[2]), nil
}

// SetChartImage rewrites image's artifacthub.io/images entry of chartYAML to image:tag@digest.
func SetChartImage(chartYAML []byte, image, tag, digest string) ([]byte, error) {
	if !strings.HasPrefix(digest, "sha256:") {
		return nil, fmt.Errorf("digest %q: want sha256:<hex>", digest)
	}
	re := imageLine(image)
	if !re.Match(chartYAML) {
		return nil, fmt.Errorf("Chart.yaml: artifacthub.io/images has no entry for %s: add `image: %s:<version>`", image, image)
	}
	return re.ReplaceAll(chartYAML, []byte("${1}"+image+":"+tag+"@"+digest)), nil
}
