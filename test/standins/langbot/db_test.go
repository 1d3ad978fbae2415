package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// LangBot connects through asyncpg, whose TLS mode is the URL's ssl=/sslmode=, else
// PGSSLMODE, else "prefer": TLS first, and plain text to the same server when it refuses TLS
// (an external PostgreSQL without TLS, like hack/postgres.sh's, must work).
func TestPgxConfigFollowsAsyncpgTLSModes(t *testing.T) {
	structured := dbConfig{use: "postgresql", host: "10.244.0.1", port: 25432, user: "langbot", password: "p@ss/word", database: "langbot"}
	cases := []struct {
		name      string
		cfg       dbConfig
		pgsslmode string
		tls       bool // the first attempt uses TLS
		plain     bool // a plain-text attempt to the same server follows
	}{
		{"structured fields: prefer", structured, "", true, true},
		{"structured fields, PGSSLMODE=disable", structured, "disable", false, false},
		{"structured fields, PGSSLMODE=require", structured, "require", true, false},
		{"url without a mode: prefer", dbConfig{url: "postgresql+asyncpg://langbot:pw@10.244.0.1:25432/langbot"}, "", true, true},
		{"url ssl=disable", dbConfig{url: "postgresql://langbot:pw@10.244.0.1:25432/langbot?ssl=disable"}, "", false, false},
		{"url sslmode=require", dbConfig{url: "postgresql://langbot:pw@10.244.0.1:25432/langbot?sslmode=require"}, "", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PGSSLMODE", tc.pgsslmode)
			cfg, err := tc.cfg.pgxConfig()
			require.NoError(t, err)
			assert.Equal(t, "10.244.0.1", cfg.Host)
			assert.Equal(t, uint16(25432), cfg.Port)
			assert.Equal(t, "langbot", cfg.User)
			assert.Equal(t, "langbot", cfg.Database)
			assert.Equal(t, tc.tls, cfg.TLSConfig != nil, "TLS on the first attempt")
			var plain bool
			for _, fb := range cfg.Fallbacks {
				assert.Equal(t, "10.244.0.1", fb.Host, "a fallback goes to the same server")
				assert.Equal(t, uint16(25432), fb.Port)
				plain = plain || fb.TLSConfig == nil
			}
			assert.Equal(t, tc.plain, plain, "a plain-text attempt after TLS")
		})
	}
	cfg, err := structured.pgxConfig()
	require.NoError(t, err)
	assert.Equal(t, "p@ss/word", cfg.Password, "the password survives the URL")
	_, err = dbConfig{url: "postgresql://x@y/z?ssl=require&sslmode=disable"}.pgxConfig()
	assert.ErrorContains(t, err, "conflicting ssl and sslmode")
}
