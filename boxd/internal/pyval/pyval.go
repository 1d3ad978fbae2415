// Package pyval renders values the way the Python reference runtime does: str() and
// truthiness of decoded JSON and YAML values, and datetime.isoformat() of UTC times. The Box protocol leaks both into responses and error
// texts (e.g. a numeric skill name, `include_hidden: 1`).
package pyval

import (
	"encoding/json"
	"fmt"
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
		s := strconv.FormatFloat(t, 'f', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
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
