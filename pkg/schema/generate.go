// Package schema turns the chart's schema source (schemas/values.schema.yaml) into
// charts/langbot/values.schema.json and validates values against it with gojsonschema.
package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Generate converts the YAML schema source into the JSON document Helm reads. YAML anchors and
// merge keys are expanded; top-level keys starting with "x-" (anchor holders) are dropped.
// The output is 2-space indented with sorted keys and a trailing newline, so it is stable.
func Generate(source []byte) ([]byte, error) {
	raw, err := yaml.YAMLToJSON(source)
	if err != nil {
		return nil, fmt.Errorf("parse schema source: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("decode schema source: %w", err)
	}
	for k := range doc {
		if strings.HasPrefix(k, "x-") {
			delete(doc, k)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode schema: %w", err)
	}
	return buf.Bytes(), nil
}
