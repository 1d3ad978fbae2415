package runtime

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAuditDestination(t *testing.T) {
	var stdout, stderr bytes.Buffer
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	cases := []struct {
		name string
		o    Options
		want io.Writer // nil: none; for the file case checked separately
		file bool
	}{
		{"ws mode: stdout", Options{Stdout: &stdout, Stderr: &stderr}, &stdout, false},
		{"stdio mode: stderr, never the protocol's stdout", Options{Stdio: true, Stdout: &stdout, Stderr: &stderr}, &stderr, false},
		{"stdio mode without stderr: none", Options{Stdio: true, Stdout: &stdout}, nil, false},
		{"library use without writers: none", Options{}, nil, false},
		{"file wins", Options{Stdio: true, Stdout: &stdout, Stderr: &stderr, AuditLog: file}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, closeFn, err := auditDestination(tc.o)
			require.NoError(t, err)
			defer closeFn()
			if tc.file {
				f, ok := w.(*os.File)
				require.True(t, ok)
				assert.Equal(t, file, f.Name())
				st, err := os.Stat(file)
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
				return
			}
			assert.Equal(t, tc.want, w)
		})
	}
	_, _, err := auditDestination(Options{AuditLog: filepath.Join(t.TempDir(), "no", "such", "dir", "a.log")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "open audit log")
}
