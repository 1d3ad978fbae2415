package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// outcomeData is what the stand-in did with the chart's settings.
type outcomeData struct {
	Database      map[string]any `json:"database"`
	PluginRuntime map[string]any `json:"plugin_runtime"`
	Box           boxOutcome     `json:"box"`
}

type boxOutcome struct {
	State  string         `json:"state"` // disabled | pending | ok | failed | e2b (not exercised)
	Detail string         `json:"detail,omitempty"`
	Exec   map[string]any `json:"exec,omitempty"`
	File   string         `json:"file,omitempty"`
	Skill  map[string]any `json:"skill,omitempty"`
	// WriteBack is the file a sandbox command wrote into the workspace, read on langbot's disk.
	WriteBack string `json:"write_back,omitempty"`
	// MCP is the stdio MCP round trip: the line the managed process echoed through the relay.
	MCP      map[string]any `json:"mcp,omitempty"`
	Attempts int            `json:"attempts"`
}

// outcome logs every change as one JSON line and keeps the latest in a file on the data
// volume (written to a temporary name and renamed, so a reader never sees half of it).
type outcome struct {
	log  *slog.Logger
	path string
	mu   sync.Mutex
	data outcomeData
}

func newOutcome(log *slog.Logger, path string) *outcome {
	return &outcome{log: log, path: path}
}

func (o *outcome) set(change func(*outcomeData)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	change(&o.data)
	b, err := json.Marshal(o.data)
	if err != nil {
		o.log.Error("encode stand-in outcome", "err", err)
		return
	}
	o.log.Info("stand-in outcome", "json", string(b))
	if err := os.MkdirAll(filepath.Dir(o.path), 0o755); err != nil {
		o.log.Error("write stand-in outcome", "path", o.path, "err", err)
		return
	}
	tmp := o.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		o.log.Error("write stand-in outcome", "path", tmp, "err", err)
		return
	}
	if err := os.Rename(tmp, o.path); err != nil {
		o.log.Error("write stand-in outcome", "path", o.path, "err", err)
	}
}
