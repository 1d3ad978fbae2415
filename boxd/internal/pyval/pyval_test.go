package pyval

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestStrAndTruthy(t *testing.T) {
	for _, tc := range []struct {
		in     any
		str    string
		truthy bool
	}{
		{nil, "None", false},
		{"", "", false},
		{"x", "x", true},
		{true, "True", true},
		{false, "False", false},
		{0, "0", false},
		{12, "12", true},
		{int64(7), "7", true},
		{1.0, "1.0", true},
		{0.5, "0.5", true},
		{0.0, "0.0", false},
		{json.Number("3"), "3", true},
		{json.Number("0"), "0", false},
		{json.Number("0.0"), "0.0", false},
		{[]any{}, "[]", false},
		{[]any{"a"}, `["a"]`, true},
		{map[string]any{}, "{}", false},
	} {
		assert.Equal(t, tc.str, Str(tc.in), "%#v", tc.in)
		assert.Equal(t, tc.truthy, Truthy(tc.in), "%#v", tc.in)
	}
}

func TestIsoFormat(t *testing.T) {
	assert.Equal(t, "2026-01-02T03:04:05+00:00", IsoFormat(time.Date(2026, 1, 2, 3, 4, 5, 999, time.UTC)))
	assert.Equal(t, "2026-01-02T03:04:05.000120+00:00", IsoFormat(time.Date(2026, 1, 2, 4, 4, 5, 120000, time.FixedZone("x", 3600))))
}
