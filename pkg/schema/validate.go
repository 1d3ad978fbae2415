package schema

import (
	"fmt"
	"sort"
	"strings"

	"github.com/xeipuuv/gojsonschema"
)

// Problem is one schema violation, with the dotted path of the offending field.
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s", p.Field, p.Message) }

// Validator checks values against a compiled JSON schema.
type Validator struct {
	schema *gojsonschema.Schema
}

// NewValidator compiles schemaJSON (draft-07).
func NewValidator(schemaJSON []byte) (*Validator, error) {
	s, err := gojsonschema.NewSchema(gojsonschema.NewBytesLoader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("compile values schema: %w", err)
	}
	return &Validator{schema: s}, nil
}

// Validate returns every violation of values, sorted by field. Violations of sub-schemas
// combined with oneOf/not are reported once, at the field they concern.
func (v *Validator) Validate(values map[string]any) ([]Problem, error) {
	res, err := v.schema.Validate(gojsonschema.NewGoLoader(values))
	if err != nil {
		return nil, fmt.Errorf("validate values: %w", err)
	}
	seen := map[string]bool{}
	var out []Problem
	for _, e := range res.Errors() {
		field := e.Field()
		switch e.Type() {
		case "additional_property_not_allowed", "required":
			if prop, ok := e.Details()["property"].(string); ok {
				field = joinField(field, prop)
			}
		}
		if field == "(root)" {
			field = "values"
		}
		p := Problem{Field: field, Message: describe(e)}
		if seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out, nil
}

func joinField(parent, child string) string {
	if parent == "" || parent == "(root)" {
		return child
	}
	return parent + "." + child
}

// notHints explains the schema's `not` rules, whose generic message says nothing useful.
var notHints = map[string]string{
	"image.tag": "`latest` is refused: pin a version (or set a digest) so upgrades are deliberate",
	"hostRoot":  "'.' and '..' path segments are refused: give a clean absolute path such as /app/data/box",
}

// describe makes gojsonschema's messages actionable where the default text is vague.
func describe(e gojsonschema.ResultError) string {
	switch e.Type() {
	case "additional_property_not_allowed":
		return "unknown key: remove it or check its spelling against values.yaml"
	case "number_not":
		for suffix, hint := range notHints {
			if strings.HasSuffix(e.Field(), suffix) {
				return hint
			}
		}
		return "value is refused by the schema"
	case "number_one_of":
		return "value does not match any allowed form: " + strings.TrimSpace(e.Description())
	}
	return e.Description()
}
