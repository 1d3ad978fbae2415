package schema

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// ValuesTable renders a markdown table of every documented key of a generated schema:
// dotted key, type, default (from the chart's values.yaml) and description, in sorted order.
// $refs to #/definitions are followed.
func ValuesTable(schemaJSON, valuesYAML []byte) (string, error) {
	var doc map[string]any
	if err := json.Unmarshal(schemaJSON, &doc); err != nil {
		return "", fmt.Errorf("decode schema: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(valuesYAML, &values); err != nil {
		return "", fmt.Errorf("decode values.yaml: %w", err)
	}
	cell := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	defs, _ := doc["definitions"].(map[string]any)
	var rows []string
	var walk func(prefix string, node map[string]any, depth int)
	walk = func(prefix string, node map[string]any, depth int) {
		desc, _ := node["description"].(string)
		if ref, ok := node["$ref"].(string); ok {
			if d, ok := defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any); ok {
				if desc == "" {
					desc, _ = d["description"].(string)
				}
				node = d
			}
		}
		props, _ := node["properties"].(map[string]any)
		if prefix != "" && (len(props) == 0 || depth > 3) {
			rows = append(rows, fmt.Sprintf("| `%s` | %s | %s | %s |", prefix, typeOf(node), cell(defaultOf(values, prefix)), cell(desc)))
			return
		}
		if prefix != "" && desc != "" {
			rows = append(rows, fmt.Sprintf("| `%s` | object |  | %s |", prefix, cell(desc)))
		}
		keys := make([]string, 0, len(props))
		for k := range props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child, _ := props[k].(map[string]any)
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			walk(name, child, depth+1)
		}
	}
	walk("", doc, 0)
	return "| key | type | default | description |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n", nil
}

// maxDefault is the longest default shown in the table; longer ones say where to look.
const maxDefault = 60

// defaultOf is the value of the dotted key in values.yaml as compact JSON in backticks, "" when
// values.yaml does not set it (the key is optional and unset by default).
func defaultOf(values map[string]any, key string) string {
	var cur any = values
	for _, part := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		if cur, ok = m[part]; !ok {
			return ""
		}
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return ""
	}
	if len(b) > maxDefault {
		return "see values.yaml"
	}
	return "`" + string(b) + "`"
}

func typeOf(node map[string]any) string {
	switch t := node["type"].(type) {
	case string:
		if e, ok := node["enum"].([]any); ok {
			var vs []string
			for _, v := range e {
				vs = append(vs, fmt.Sprintf("`%v`", v))
			}
			return strings.Join(vs, " \\| ")
		}
		return t
	case []any:
		var vs []string
		for _, v := range t {
			vs = append(vs, fmt.Sprint(v))
		}
		return strings.Join(vs, " or ")
	}
	if _, ok := node["oneOf"]; ok {
		return "quantity"
	}
	return "any"
}
