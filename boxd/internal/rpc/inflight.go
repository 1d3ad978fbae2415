package rpc

import (
	"encoding/json"
	"fmt"
)

// MaxInFlight is how many actions one connection may run at a time (the reference's
// MAX_INFLIGHT_ACTIONS); a request beyond it is refused at once with Busy.
const MaxInFlight = 128

// Busy is the refusal of a request over MaxInFlight, sent without a class prefix as the
// reference sends it.
func Busy() *Error {
	return &Error{Bare: true, Text: fmt.Sprintf("Runtime connection is busy (max %d concurrent actions)", MaxInFlight)}
}

// Gate counts the actions one connection runs (control channel: WebSocket or stdio).
type Gate struct{ slots chan struct{} }

// NewGate returns a gate of MaxInFlight slots.
func NewGate() *Gate { return &Gate{slots: make(chan struct{}, MaxInFlight)} }

// Enter takes a slot for raw. When none is free it returns the Busy response to send, or nil
// when raw is not a request (nothing is sent for those).
func (g *Gate) Enter(raw []byte) (ok bool, refusal *Response) {
	select {
	case g.slots <- struct{}{}:
		return true, nil
	default:
	}
	var req Request
	if json.Unmarshal(raw, &req) != nil || len(req.Action) == 0 {
		return false, nil
	}
	r := Failure(req.SeqID, Busy())
	return false, &r
}

// Leave gives back a slot taken by Enter.
func (g *Gate) Leave() { <-g.slots }
