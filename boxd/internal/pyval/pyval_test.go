package pyval

import (
	"encoding/json"
	"math"
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

// TestFloatRepr compares with what CPython 3 prints for repr(x) and json.dumps(x).
func TestFloatRepr(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{1, "1.0"}, {0.5, "0.5"}, {2, "2.0"}, {0.25, "0.25"}, {1.1, "1.1"}, {0.30000000000000004, "0.30000000000000004"},
		{0.0001, "0.0001"}, {0.00001, "1e-05"}, {0.000015, "1.5e-05"}, {1234567890123456, "1234567890123456.0"},
		{1e16, "1e+16"}, {1.5e16, "1.5e+16"}, {1e22, "1e+22"}, {123456789, "123456789.0"}, {-0.5, "-0.5"},
		{0, "0.0"}, {1e-300, "1e-300"},
	} {
		assert.Equal(t, tc.want, FloatRepr(tc.in), "%v", tc.in)
		b, err := json.Marshal(map[string]any{"cpus": Float(tc.in)})
		assert.NoError(t, err)
		assert.Equal(t, `{"cpus":`+tc.want+`}`, string(b))
		assert.Equal(t, tc.want, Str(tc.in))
	}
	_, err := json.Marshal(Float(math.Inf(1)))
	assert.Error(t, err, "JSON has no infinity")
}
