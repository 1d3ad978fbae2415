package ociimage

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// The chart's ArtifactHub annotations are well-formed: every images entry named, boxd pinned by
// the chart version and a digest (which the release test compares with the built index),
// changes of ArtifactHub's kinds, links with https URLs, a license; artifacthub-repo.yml parses.
func TestArtifactHubMetadata(t *testing.T) {
	b, err := os.ReadFile("../../charts/langbot/Chart.yaml")
	require.NoError(t, err)
	var chart struct {
		Version     string            `json:"version"`
		Annotations map[string]string `json:"annotations"`
	}
	require.NoError(t, yaml.Unmarshal(b, &chart))
	a := chart.Annotations
	assert.NotEmpty(t, a["artifacthub.io/license"])

	var images []struct{ Name, Image string }
	require.NoError(t, yaml.Unmarshal([]byte(a["artifacthub.io/images"]), &images), "artifacthub.io/images")
	byName := map[string]string{}
	for _, im := range images {
		require.NotEmpty(t, im.Name, "an images entry without a name: %+v", im)
		byName[im.Name] = im.Image
	}
	assert.Regexp(t, "^"+regexp.QuoteMeta("ghcr.io/langbot-k8s/boxd:"+chart.Version)+"@sha256:[0-9a-f]{64}$", byName["boxd"])
	assert.NotEmpty(t, byName["langbot"])

	var changes []struct{ Kind, Description string }
	require.NoError(t, yaml.Unmarshal([]byte(a["artifacthub.io/changes"]), &changes), "artifacthub.io/changes")
	require.NotEmpty(t, changes)
	kinds := map[string]bool{"added": true, "changed": true, "deprecated": true, "removed": true, "fixed": true, "security": true}
	for _, c := range changes {
		assert.True(t, kinds[c.Kind], "change kind %q is not one of ArtifactHub's", c.Kind)
		assert.NotEmpty(t, c.Description)
	}

	var links []struct{ Name, URL string }
	require.NoError(t, yaml.Unmarshal([]byte(a["artifacthub.io/links"]), &links), "artifacthub.io/links")
	require.NotEmpty(t, links)
	for _, l := range links {
		assert.NotEmpty(t, l.Name)
		assert.True(t, strings.HasPrefix(l.URL, "https://"), "link %q: %q", l.Name, l.URL)
	}

	rb, err := os.ReadFile("../../artifacthub-repo.yml")
	require.NoError(t, err)
	var repo struct {
		RepositoryID string `json:"repositoryID"`
		Owners       []struct {
			Name  string `json:"name"`
			Email string `json:"email"`
		} `json:"owners"`
	}
	require.NoError(t, yaml.UnmarshalStrict(rb, &repo), "artifacthub-repo.yml holds only ArtifactHub's keys")
	for _, o := range repo.Owners {
		assert.Contains(t, o.Email, "@", "owner %q", o.Name)
	}
}
