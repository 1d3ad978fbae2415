// Package values loads and merges a values stack the way helm does:
// -f a.yaml -f b.yaml, then --set, --set-string and --set-file, later ones winning.
package values

import (
	"fmt"

	"helm.sh/helm/v3/pkg/cli"
	helmvalues "helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// Stack is one values stack in helm's flag order.
type Stack struct {
	Files      []string // -f/--values
	Set        []string // --set
	SetString  []string // --set-string
	SetFile    []string // --set-file
	SetJSON    []string // --set-json
	SetLiteral []string // --set-literal
}

// Merge reads the files and applies the --set flags, returning the user-supplied values
// (chart defaults are applied later, at render time, as helm does).
func (s Stack) Merge() (map[string]any, error) {
	opts := helmvalues.Options{
		ValueFiles:    s.Files,
		Values:        s.Set,
		StringValues:  s.SetString,
		FileValues:    s.SetFile,
		JSONValues:    s.SetJSON,
		LiteralValues: s.SetLiteral,
	}
	vals, err := opts.MergeValues(getter.All(cli.New()))
	if err != nil {
		return nil, fmt.Errorf("merge values stack: %w", err)
	}
	return vals, nil
}
