package shellquote

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestQuoteMatchesShlex(t *testing.T) {
	cases := map[string]string{
		"":                 "''",
		"/workspace":       "/workspace",
		"a-b_c.d/e:f,g@h%": "a-b_c.d/e:f,g@h%",
		"+=":               "+=",
		"my dir":           "'my dir'",
		"it's":             `'it'"'"'s'`,
		"$HOME":            "'$HOME'",
		"中文":               "'中文'",
		"a\nb":             "'a\nb'",
	}
	for in, want := range cases {
		assert.Equal(t, want, Quote(in), "Quote(%q)", in)
	}
}

func TestScripts(t *testing.T) {
	assert.Equal(t, "{ [ -d /workspace ] || mkdir -p /workspace; } && cd /workspace && echo hi", ExecScript("/workspace", "echo hi"))
	assert.Equal(t, "mkdir -p '/w s' && cd '/w s' && exec npx -y 'a b'", ProcessScript("/w s", "npx", []string{"-y", "a b"}))
}
