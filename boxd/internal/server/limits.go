package server

import (
	"fmt"
	"time"
)

// ConnLimits bound what one slow or hostile peer can make boxd hold (boxd/README.md, "Limits").
// They apply to every WebSocket endpoint: /rpc/ws and the managed-process relays.
type ConnLimits struct {
	// MaxConnections is the number of WebSocket connections served at once; one more is
	// refused with HTTP 503 before the upgrade.
	MaxConnections int
	// MessageTimeout is how long an inbound message may take from its first frame to its
	// last; a peer that leaves a fragmented message unfinished is disconnected after it.
	MessageTimeout time.Duration
	// WriteTimeout is how long one outbound message may take to be written.
	WriteTimeout time.Duration
	// MaxOutboundBytes bounds the responses queued for one /rpc/ws connection; a peer that
	// lets more pile up (it does not read) is disconnected.
	MaxOutboundBytes int
	// MaxInboundBytes bounds, for the whole process, the bytes held by incoming messages
	// being assembled on all WebSocket connections together; the connection whose message
	// does not fit is disconnected. At least one maximal message.
	MaxInboundBytes int
}

// DefaultConnLimits are the limits of a boxd started without the corresponding flags.
func DefaultConnLimits() ConnLimits {
	return ConnLimits{MaxConnections: 128, MessageTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second,
		MaxOutboundBytes: 2 * maxMessage, MaxInboundBytes: 8 * maxMessage}
}

// Validate names the flag of the first unusable limit.
func (l ConnLimits) Validate() error {
	switch {
	case l.MaxConnections < 1:
		return fmt.Errorf("-max-connections must be at least 1, got %d", l.MaxConnections)
	case l.MessageTimeout <= 0:
		return fmt.Errorf("-ws-message-timeout must be a positive duration such as 60s, got %s", l.MessageTimeout)
	case l.WriteTimeout <= 0:
		return fmt.Errorf("-ws-write-timeout must be a positive duration such as 60s, got %s", l.WriteTimeout)
	case l.MaxOutboundBytes < maxMessage:
		return fmt.Errorf("-ws-max-outbound-bytes must be at least %d (one maximal message), got %d", maxMessage, l.MaxOutboundBytes)
	case l.MaxInboundBytes < maxMessage:
		return fmt.Errorf("-ws-max-inbound-bytes must be at least %d (one maximal message), got %d", maxMessage, l.MaxInboundBytes)
	}
	return nil
}

// WithDefaults fills the zero fields of l from DefaultConnLimits.
func (l ConnLimits) WithDefaults() ConnLimits {
	d := DefaultConnLimits()
	if l.MaxConnections == 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MessageTimeout == 0 {
		l.MessageTimeout = d.MessageTimeout
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.MaxOutboundBytes == 0 {
		l.MaxOutboundBytes = d.MaxOutboundBytes
	}
	if l.MaxInboundBytes == 0 {
		l.MaxInboundBytes = d.MaxInboundBytes
	}
	return l
}
