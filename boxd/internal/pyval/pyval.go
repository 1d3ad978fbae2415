// Package pyval renders values the way the Python reference runtime does: str() and
// truthiness of decoded JSON and YAML values, and datetime.isoformat() of UTC times. The Box protocol leaks both into responses and error
// texts (e.g. a numeric skill name, `include_hidden: 1`).
package pyval

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Str is Python's str() of a JSON/YAML scalar (None, True/False, 1.0 for floats); lists and
// maps are rendered as JSON, which is close to, not equal to, Python's repr.
func Str(v any) string {
	switch t := v.(type) {
	case nil:
		return "None"
	case string:
		return t
	case bool:
		if t {
			return "True"
		}
		return "False"
	case int:
		return strconv.Itoa(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case json.Number:
		return t.String()
	case float64:
		return FloatRepr(t)
	case Float:
		return FloatRepr(float64(t))
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// FloatRepr is Python's repr() (and str(), and json.dumps) of a float: the shortest digits
// that round-trip, in fixed notation with at least one decimal ("1.0", "0.5",
// "1234567890123456.0") while the decimal exponent is in [-4, 16), in exponent notation with
// a signed exponent of at least two digits otherwise ("1e-05", "1.5e+16"). NaN and the
// infinities are rendered as json.dumps does (NaN, Infinity, -Infinity).
func FloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d[.ddd]e±XX, at least two exponent digits
	exp, err := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if err == nil && (exp < -4 || exp >= 16) {
		return e
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// Float is a float64 that marshals to JSON as Python does ("1.0", not Go's "1"), for the
// protocol's float fields (BoxSessionInfo.cpus) where LangBot reads what the reference sent.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return nil, fmt.Errorf("marshal float %v: JSON has no such number", float64(f))
	}
	return []byte(FloatRepr(float64(f))), nil
}

// Truthy is Python's bool() of a JSON/YAML value.
func Truthy(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case string:
		return t != ""
	case bool:
		return t
	case int:
		return t != 0
	case int64:
		return t != 0
	case float64:
		return t != 0
	case Float:
		return t != 0
	case json.Number:
		f, err := t.Float64()
		return err != nil || f != 0
	case []any:
		return len(t) > 0
	case map[string]any:
		return len(t) > 0
	}
	return true
}

// IsoFormat is Python's datetime.isoformat() of an aware UTC datetime:
// 2026-01-02T03:04:05+00:00, with .ffffff when the microseconds are not zero.
func IsoFormat(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05") + "+00:00"
	}
	return t.Format("2006-01-02T15:04:05.000000") + "+00:00"
}
