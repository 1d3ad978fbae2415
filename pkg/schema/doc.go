package schema

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// ValuesTable renders a markdown table of every documented key of a generated schema:
// dotted key, type and description, in sorted order. $refs to #/definitions are followed.
func ValuesTable(schemaJSON []byte) (string, error) {
	var doc map[string]any
	if err := json.Unmarshal(schemaJSON, &doc); err != nil {
		return "", fmt.Errorf("decode schema: %w", err)
	}
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
			rows = append(rows, fmt.Sprintf("| `%s` | %s | %s |", prefix, typeOf(node), strings.ReplaceAll(desc, "|", "\\|")))
			return
		}
		if prefix != "" && desc != "" {
			rows = append(rows, fmt.Sprintf("| `%s` | object | %s |", prefix, strings.ReplaceAll(desc, "|", "\\|")))
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
	return "| key | type | description |\n|---|---|---|\n" + strings.Join(rows, "\n") + "\n", nil
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
