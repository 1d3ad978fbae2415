package server

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/audit"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// auditedActions are the state-changing actions recorded in the audit log, with the
// function that picks their (secret-free) details from the request and the response.
var auditedActions = map[string]func(req, resp map[string]any) map[string]any{
	"box_init":     nil, // handled in auditRPC (section names only)
	"box_shutdown": nil,
	"box_exec": func(req, resp map[string]any) map[string]any {
		cmd, _ := req["cmd"].(string)
		d := map[string]any{"cmd_sha256": audit.Hash(cmd), "env_count": countKeys(req["env"])}
		if v, ok := req["timeout_sec"]; ok {
			d["timeout_sec"] = v
		}
		if resp != nil {
			d["status"], d["exit_code"], d["duration_ms"] = resp["status"], resp["exit_code"], resp["duration_ms"]
			d["timed_out"] = resp["status"] == "timed_out"
		}
		return d
	},
	"box_create_session": func(req, resp map[string]any) map[string]any {
		d := map[string]any{"persistent": req["persistent"], "env_count": countKeys(req["env"])}
		if resp != nil {
			d["backend_session_id"] = resp["backend_session_id"]
		}
		return d
	},
	"box_delete_session": nil,
	"box_start_managed_process": func(req, resp map[string]any) map[string]any {
		spec, _ := req["spec"].(map[string]any)
		cmd, _ := spec["command"].(string)
		parts := []string{cmd}
		if args, ok := spec["args"].([]any); ok {
			for _, a := range args {
				s, _ := a.(string)
				parts = append(parts, s)
			}
		}
		d := map[string]any{"process_id": processID(spec["process_id"]), "command_sha256": audit.Hash(strings.Join(parts, "\x00")),
			"env_count": countKeys(spec["env"])}
		if resp != nil {
			d["status"] = resp["status"]
		}
		return d
	},
	"box_stop_managed_process": func(req, _ map[string]any) map[string]any {
		return map[string]any{"process_id": processID(req["process_id"])}
	},
	"box_create_skill":      skillDetails,
	"box_update_skill":      skillDetails,
	"box_delete_skill":      skillDetails,
	"box_write_skill_file":  skillDetails,
	"box_install_skill_zip": skillDetails,
	"box_upsert_sandbox_admission_grant": func(req, _ map[string]any) map[string]any {
		return pick(req, "execution_generation", "entitlement_revision", "max_sessions", "max_managed_processes", "expires_at")
	},
	"box_revoke_sandbox_admission_grant": func(req, _ map[string]any) map[string]any {
		return pick(req, "entitlement_revision")
	},
}

func processID(v any) any {
	if v == nil {
		return "default"
	}
	return v
}

func countKeys(v any) int {
	m, _ := v.(map[string]any)
	return len(m)
}

func pick(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// skillDetails records the skill name (and for file writes the path and size, for zip
// installs the archive name and what got installed) — never contents or instructions.
func skillDetails(req, resp map[string]any) map[string]any {
	d := map[string]any{}
	if n, ok := req["name"]; ok {
		d["skill"] = n
	} else if sk, ok := req["skill"].(map[string]any); ok {
		d["skill"] = sk["name"]
	}
	if p, ok := req["path"]; ok {
		d["path"] = p
	}
	if f, ok := req["filename"]; ok {
		d["filename"] = f
	}
	if resp != nil {
		if n, ok := resp["bytes_written"]; ok {
			d["bytes_written"] = n
		}
		if list, ok := resp["skills"].([]any); ok {
			var names []any
			for _, it := range list {
				if m, ok := it.(map[string]any); ok {
					names = append(names, m["name"])
				}
			}
			d["installed"] = names
		}
	}
	return d
}

// plainResult is a response's data as decoded JSON, which the detail functions read. Plain
// maps (box_exec's result, the hot path) are used as they are; typed results, at the top or
// one level down (a skill, a list of installed skills, a file write), go through JSON once.
func plainResult(data any) map[string]any {
	if m, ok := data.(map[string]any); ok {
		plain := true
		for _, v := range m {
			switch v.(type) {
			case nil, string, bool, int, int64, float64, json.Number, map[string]any, []any:
			default:
				plain = false
			}
		}
		if plain {
			return m
		}
	}
	var out map[string]any
	if b, err := json.Marshal(data); err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

// auditRPC writes the record of one answered request, if its action changes state.
// class is the response's error class ("" on success), as the dispatcher computed it.
func (s *Server) auditRPC(name, class string, req rpc.Request, resp *rpc.Response) {
	if s.audit == nil {
		return
	}
	detailsOf, audited := auditedActions[name]
	if !audited {
		return
	}
	var data map[string]any
	dec := json.NewDecoder(bytes.NewReader(req.Data))
	dec.UseNumber()
	_ = dec.Decode(&data)
	var out map[string]any
	if resp.Code == 0 {
		out = plainResult(resp.Data)
	}
	r := audit.Record{Event: name, Action: name, Outcome: audit.Outcome(class), Instance: s.trustedInstance()}
	tctx, hasCtx, _ := tenancy.ParseContext(req.Context)
	switch {
	case name == "box_upsert_sandbox_admission_grant" || name == "box_revoke_sandbox_admission_grant":
		if inst, ok := data["instance_uuid"].(string); ok {
			r.Instance = strings.TrimSpace(inst)
		}
		if ws, ok := data["workspace_uuid"].(string); ok {
			r.Workspace = strings.TrimSpace(ws)
			r.Namespace = tenancy.Namespace(r.Instance, r.Workspace)
		}
	case hasCtx:
		r.Instance, r.Workspace, r.Namespace = tctx.Instance, tctx.Workspace, tctx.Namespace()
	}
	if hasCtx {
		if logical, ok := data["session_id"].(string); ok {
			if s.adm.Required() {
				logical = "global"
			}
			if phys, err := tctx.Physical(logical); err == nil {
				r.Physical, r.SessionID = phys, tctx.Logical(phys)
			}
		}
	}
	switch {
	case name == "box_init":
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		r.Details = map[string]any{"sections": keys, "admission_required": s.adm.Required()}
	case detailsOf != nil:
		r.Details = detailsOf(data, out)
	}
	s.audit.Log(r)
}
