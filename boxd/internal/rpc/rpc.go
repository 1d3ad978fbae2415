// Package rpc holds the Box RPC envelope (§3.2-3.3), the error encoding LangBot matches on
// (§3.6) and the action dispatcher.
package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Request is one request object. Context is kept raw: tenancy parses it.
type Request struct {
	SeqID   json.RawMessage `json:"seq_id"`
	Action  json.RawMessage `json:"action"`
	Data    json.RawMessage `json:"data"`
	Context json.RawMessage `json:"context"`
}

// Response is one response object.
type Response struct {
	SeqID       json.RawMessage `json:"seq_id"`
	Code        int             `json:"code"`
	Message     string          `json:"message"`
	Data        any             `json:"data"`
	ChunkStatus string          `json:"chunk_status"`
}

// Success builds a code-0 response.
func Success(seq json.RawMessage, data any) Response {
	if data == nil {
		data = map[string]any{}
	}
	return Response{SeqID: seqOrDefault(seq), Code: 0, Message: "success", Data: data, ChunkStatus: "continue"}
}

// Failure builds a code-1 response for err, "<Class>: <text>" truncated as Python does.
func Failure(seq json.RawMessage, err error) Response {
	return Response{SeqID: seqOrDefault(seq), Code: 1, Message: Message(err), Data: map[string]any{}, ChunkStatus: "continue"}
}

func seqOrDefault(seq json.RawMessage) json.RawMessage {
	if len(seq) == 0 {
		return json.RawMessage("-1")
	}
	return seq
}

// Error is an error with the Python class name LangBot matches on.
type Error struct {
	Class string // e.g. BoxValidationError, ValueError, PermissionError
	Text  string
	// Bare errors are sent without a class prefix (e.g. the busy-connection message).
	Bare bool
}

func (e *Error) Error() string {
	if e.Bare {
		return e.Text
	}
	return e.Class + ": " + e.Text
}

// Errorf builds an Error of class.
func Errorf(class, format string, args ...any) *Error {
	return &Error{Class: class, Text: fmt.Sprintf(format, args...)}
}

// Error classes of §3.6.
const (
	BoxError                   = "BoxError"
	BoxValidationError         = "BoxValidationError"
	BoxBackendUnavailableError = "BoxBackendUnavailableError"
	BoxRuntimeUnavailableError = "BoxRuntimeUnavailableError"
	BoxAdmissionError          = "BoxAdmissionError"
	BoxReadinessError          = "BoxReadinessError"
	BoxCapacityExceededError   = "BoxCapacityExceededError"
	BoxSessionConflictError    = "BoxSessionConflictError"
	BoxSessionNotFoundError    = "BoxSessionNotFoundError"
	BoxManagedProcessNotFound  = "BoxManagedProcessNotFoundError"
	BoxManagedProcessConflict  = "BoxManagedProcessConflictError"
	ValueError                 = "ValueError"
	KeyError                   = "KeyError"
	PermissionError            = "PermissionError"
	ValidationError            = "ValidationError"
	maxErrorText               = 4096
	truncatedSuffix            = "... [protocol error truncated]"
)

// Message renders err as the response message: an *Error keeps its class, anything else is
// reported as a generic BoxError.
func Message(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Class: BoxError, Text: err.Error()}
	}
	text := e.Text
	if len(text) > maxErrorText {
		text = text[:maxErrorText] + truncatedSuffix
	}
	if e.Bare {
		return text
	}
	return e.Class + ": " + text
}

// ClassOfMessage is the error class of a failed response's message, read as LangBot reads it
// (§3.6): the prefix before ':', or BoxError when there is none.
func ClassOfMessage(msg string) string {
	class, _, found := strings.Cut(msg, ":")
	if !found || class == "" || strings.ContainsAny(class, " \n") {
		return BoxError
	}
	return class
}

// ClassOf returns the error class of err ("" for a bare error).
func ClassOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return BoxError
}
