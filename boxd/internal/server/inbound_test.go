package server

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The reservation is the buffer's capacity, taken before the buffer grows and given back
// whole; a message that does not fit fails without holding anything more.
func TestInboundReservesWhatTheBufferHolds(t *testing.T) {
	cases := []struct {
		name     string
		max, len int
		ok       bool
		reserved int // while the message is held
	}{
		{"small", maxMessage, 100, true, inboundMin},
		{"exactly one buffer", maxMessage, inboundMin, true, inboundMin},
		{"one byte more doubles", maxMessage, inboundMin + 1, true, 2 * inboundMin},
		{"a maximal message fits the minimum budget", maxMessage, maxMessage, true, maxMessage},
		{"over the budget", 1 << 20, 1<<20 + 1, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &inboundBudget{max: tc.max}
			m := &inbound{budget: b}
			msg := bytes.Repeat([]byte("x"), tc.len)
			err := m.readFrom(iotest.HalfReader(bytes.NewReader(msg)))
			if !tc.ok {
				var be *errInboundBudget
				require.ErrorAs(t, err, &be)
				assert.Contains(t, err.Error(), "-ws-max-inbound-bytes")
				m.free()
				assert.Equal(t, 0, b.used)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, msg, m.buf)
			assert.Equal(t, tc.reserved, b.used)
			assert.Equal(t, cap(m.buf), b.used)
			m.free()
			assert.Equal(t, 0, b.used)
			assert.Nil(t, m.buf)
		})
	}
}

// Several buffers share one budget: the one that does not fit fails, the others are unaffected,
// and what it gave back serves the next.
func TestInboundBudgetIsSharedByBuffers(t *testing.T) {
	b := &inboundBudget{max: 3 * inboundMin}
	first, second := &inbound{budget: b}, &inbound{budget: b}
	require.NoError(t, first.readFrom(strings.NewReader(strings.Repeat("a", inboundMin+1)))) // 2 x inboundMin
	var be *errInboundBudget
	require.ErrorAs(t, second.readFrom(strings.NewReader(strings.Repeat("b", inboundMin+1))), &be)
	assert.Equal(t, errInboundBudget{want: inboundMin, used: 3 * inboundMin, max: 3 * inboundMin}, *be)
	second.free()
	assert.Equal(t, 2*inboundMin, b.used, "the failed buffer gave back what it held")
	first.free()
	require.NoError(t, second.readFrom(strings.NewReader(strings.Repeat("b", inboundMin+1))))
	assert.Equal(t, 2*inboundMin, b.used)
}

// keep holds a small buffer (still reserved) for the next message and gives a large one back.
func TestInboundKeep(t *testing.T) {
	b := &inboundBudget{max: maxMessage}
	m := &inbound{budget: b}
	require.NoError(t, m.readFrom(strings.NewReader("small")))
	m.keep(relayKeep)
	assert.Equal(t, inboundMin, b.used)
	assert.Empty(t, m.buf)
	require.NoError(t, m.readFrom(strings.NewReader(strings.Repeat("x", relayKeep+1))))
	assert.Equal(t, 2*relayKeep, b.used)
	m.keep(relayKeep)
	assert.Equal(t, 0, b.used)
}

// A read error other than the end of the message is returned as it is.
func TestInboundReadError(t *testing.T) {
	b := &inboundBudget{max: maxMessage}
	m := &inbound{budget: b}
	boom := errors.New("boom")
	require.ErrorIs(t, m.readFrom(io.MultiReader(strings.NewReader("part"), iotest.ErrReader(boom))), boom)
	m.free()
	assert.Equal(t, 0, b.used)
}

// The relay's newline goes with the message in one write when the buffer has room.
func TestWriteLineTo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		b      []byte
		writes int
	}{
		{"room for the newline", make([]byte, 3, 4), 1},
		{"full buffer", make([]byte, 4), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w countingWriter
			require.NoError(t, writeLineTo(&w, tc.b))
			assert.Equal(t, tc.writes, w.writes)
			assert.Equal(t, append(bytes.Clone(tc.b), '\n'), w.buf.Bytes())
		})
	}
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}

func TestConnLimitsValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*ConnLimits)
		want string
	}{
		{"defaults", func(*ConnLimits) {}, ""},
		{"inbound budget under one message", func(l *ConnLimits) { l.MaxInboundBytes = maxMessage - 1 },
			"-ws-max-inbound-bytes must be at least 16777216 (one maximal message), got 16777215"},
		{"inbound budget of one message", func(l *ConnLimits) { l.MaxInboundBytes = maxMessage }, ""},
		{"outbound bound under one message", func(l *ConnLimits) { l.MaxOutboundBytes = 1 },
			"-ws-max-outbound-bytes must be at least 16777216 (one maximal message), got 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := DefaultConnLimits()
			tc.mut(&l)
			err := l.Validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tc.want)
		})
	}
}
