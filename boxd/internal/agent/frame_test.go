package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFrameRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		frame Frame
	}{
		{"hello", Frame{Type: Hello, Payload: []byte(Version)}},
		{"empty payload", Frame{Type: Stdout, ID: 7, Payload: []byte{}}},
		{"largest id", Frame{Type: Exit, ID: ^uint32(0), Payload: []byte{0, 0, 0, 1}}},
		{"largest payload", Frame{Type: Stderr, ID: 1, Payload: bytes.Repeat([]byte{'x'}, MaxPayload)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, WriteFrame(&buf, tc.frame))
			assert.Equal(t, HeaderSize+len(tc.frame.Payload), buf.Len())
			got, err := ReadFrame(&buf, MaxPayload)
			require.NoError(t, err)
			assert.Equal(t, tc.frame, got)
			_, err = ReadFrame(&buf, MaxPayload)
			assert.ErrorIs(t, err, io.EOF, "a stream that ends between frames is a clean EOF")
		})
	}
}

func header(t Type, id, n uint32) []byte {
	h := []byte{byte(t), 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:5], id)
	binary.BigEndian.PutUint32(h[5:9], n)
	return h
}

func TestReadFrameRefuses(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"payload over the bound", header(Stdout, 1, MaxPayload+1), MaxPayload, ErrFrameTooLarge},
		{"payload over a small bound", append(header(Hello, 0, 11), "boxagent/99"...), len(Version), ErrFrameTooLarge},
		{"length near 4 GiB", header(Stdout, 1, ^uint32(0)), MaxPayload, ErrFrameTooLarge},
		{"truncated header", []byte{byte(Stdout), 0, 0}, MaxPayload, io.ErrUnexpectedEOF},
		{"truncated payload", append(header(Stdout, 1, 10), "abc"...), MaxPayload, io.ErrUnexpectedEOF},
		{"empty payload declared but missing header bytes", header(Exit, 1, 4)[:8], MaxPayload, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.input), tc.max)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestWriteFrameRefusesOversizedPayload(t *testing.T) {
	var buf bytes.Buffer
	err := WriteFrame(&buf, Frame{Type: Stdout, ID: 1, Payload: make([]byte, MaxPayload+1)})
	assert.ErrorIs(t, err, ErrFrameTooLarge)
	assert.Zero(t, buf.Len(), "nothing is written")
}

func TestCommandRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		cmd  Command
	}{
		{"argv only", Command{Argv: []string{"true"}, Env: []string{}}},
		{"sh -lc with env and dir", Command{Argv: []string{"sh", "-lc", "echo 'x y'; exit 3"}, Env: []string{"A=1", "B=two words", "C="}, Dir: "/workspace/sub dir"}},
		{"values with = and newlines", Command{Argv: []string{"env"}, Env: []string{"K=a=b\nc"}}},
		{"empty arguments kept", Command{Argv: []string{"printf", "", "%s"}, Env: []string{}}},
		{"with a stdin pipe", Command{Argv: []string{"cat"}, Env: []string{}, Stdin: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := EncodeCommand(tc.cmd)
			require.NoError(t, err)
			got, err := DecodeCommand(p)
			require.NoError(t, err)
			assert.Equal(t, tc.cmd, got)
		})
	}
}

func TestEncodeCommandRefuses(t *testing.T) {
	cases := []struct {
		name string
		cmd  Command
		want error
	}{
		{"too large for a frame", Command{Argv: []string{"sh", "-c", strings.Repeat("x", MaxPayload)}}, ErrFrameTooLarge},
		{"empty argv", Command{}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EncodeCommand(tc.cmd)
			require.Error(t, err)
			if tc.want != nil {
				assert.ErrorIs(t, err, tc.want)
			}
		})
	}
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func str(s string) []byte { return append(u32(uint32(len(s))), s...) }

func TestDecodeCommandRefuses(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "truncated argv count"},
		{"argv count beyond the frame", cat(u32(1000), str("sh")), "argv count 1000 exceeds the frame"},
		{"string length beyond the frame", cat(u32(1), u32(50), []byte("sh")), "argv length 50 exceeds the frame"},
		{"no env list", cat(u32(1), str("sh")), "truncated env count"},
		{"no dir", cat(u32(1), str("sh"), u32(0)), "truncated dir length"},
		{"no flags (a boxagent/1 payload)", cat(u32(1), str("sh"), u32(0), str("")), "truncated flags"},
		{"unknown flags", cat(u32(1), str("sh"), u32(0), str(""), u32(6)), "unknown flags 0x6"},
		{"trailing bytes", cat(u32(1), str("sh"), u32(0), str(""), u32(0), []byte{1}), "1 trailing bytes"},
		{"empty argv", cat(u32(0), u32(0), str(""), u32(0)), "empty argv"},
		{"empty program", cat(u32(1), str(""), u32(0), str(""), u32(0)), "empty argv"},
		{"NUL in an argument", cat(u32(1), str("s\x00h"), u32(0), str(""), u32(0)), "argv contains a NUL byte"},
		{"NUL in the dir", cat(u32(1), str("sh"), u32(0), str("/a\x00"), u32(0)), "dir contains a NUL byte"},
		{"env entry without =", cat(u32(1), str("sh"), u32(1), str("NOVALUE"), str(""), u32(0)), `env entry "NOVALUE" is not KEY=VALUE`},
		{"env entry with an empty key", cat(u32(1), str("sh"), u32(1), str("=x"), str(""), u32(0)), `env entry "=x" is not KEY=VALUE`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand(tc.payload)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestMergeEnvIsTheEnginesExecMerge(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "ZZZ=1"}
	home := []string{"HOME=/root"}
	cases := []struct {
		name      string
		overrides []string
		appended  []string
		want      []string
	}{
		{"nothing", nil, home, []string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "ZZZ=1", "HOME=/root"}},
		{"new keys appended in order, runtime HOME last", []string{"FOO=1", "AA=2"}, home,
			[]string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "ZZZ=1", "FOO=1", "AA=2", "HOME=/root"}},
		{"known keys replaced in place", []string{"HOSTNAME=h", "PATH=/x"}, home,
			[]string{"PATH=/x", "HOSTNAME=h", "ZZZ=1", "HOME=/root"}},
		{"HOME set by the command wins, not appended twice", []string{"FOO=1", "HOME=/h"}, home,
			[]string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "ZZZ=1", "FOO=1", "HOME=/h"}},
		{"values kept verbatim", []string{"A=two words 'q'", "B=$HOME", "C=x=y"}, nil,
			[]string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "ZZZ=1", "A=two words 'q'", "B=$HOME", "C=x=y"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]string(nil), base...)
			assert.Equal(t, tc.want, MergeEnv(base, tc.overrides, tc.appended))
			assert.Equal(t, before, base, "base is not modified")
		})
	}
}

func TestSplitEnv(t *testing.T) {
	cases := []struct {
		name           string
		environ        []string
		base, appended []string
	}{
		{"mark then runtime HOME", []string{"PATH=/bin", EnvMark, "HOME=/root"}, []string{"PATH=/bin"}, []string{"HOME=/root"}},
		{"mark last", []string{"PATH=/bin", "HOME=/home/u", EnvMark}, []string{"PATH=/bin", "HOME=/home/u"}, []string{}},
		{"no mark", []string{"PATH=/bin", "HOME=/root"}, []string{"PATH=/bin", "HOME=/root"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base, appended := SplitEnv(tc.environ)
			assert.Equal(t, tc.base, base)
			assert.Equal(t, tc.appended, appended)
		})
	}
}
