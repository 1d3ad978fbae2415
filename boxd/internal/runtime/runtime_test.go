package runtime

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidateEnvironment(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"no token is fine", Options{}, ""},
		{"long token", Options{Token: strings.Repeat("k", 32)}, ""},
		{"short token", Options{Token: "short"}, "LANGBOT_BOX_CONTROL_TOKEN must be a non-whitespace secret of at least 32 characters"},
		{"token with space", Options{Token: strings.Repeat("k", 20) + " " + strings.Repeat("k", 20)}, "at least 32 characters"},
		{"stdio needs a trusted instance", Options{Stdio: true}, "LANGBOT_BOX_TRUSTED_INSTANCE_UUID is required for stdio Box control"},
		{"bad trusted instance", Options{TrustedInstance: "-x y"}, "not a valid instance id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
