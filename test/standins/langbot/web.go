package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// The web UI's index.html stands for web/dist/index.html (the Vite build the image ships).
const indexHTML = "<!doctype html>\n<html><head><title>LangBot</title></head><body><div id=\"root\"></div></body></html>\n"

// webHandler answers what LangBot's HTTP server answers (pkg/api/http/controller/main.py on
// Hypercorn, with the MCP dispatcher of pkg/api/mcp/mount.py in front) for a LangBot without
// bots or API keys. LangBot's /api/v1/* management routes are not served (the chart and its
// probes touch none of them): they answer 404 here as any unknown /api/ path does in LangBot.
func webHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Hypercorn's include_server_header default.
		w.Header().Set("Server", "hypercorn-h11")
		path := r.URL.Path
		switch {
		case path == "/mcp" || strings.HasPrefix(path, "/mcp/"):
			// mcp/mount.py dispatcher: every method, before Quart; without a valid API key
			// (this LangBot has none) 401 with a JSON body and WWW-Authenticate: Bearer.
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "unauthorized", "message": "an API key is required for MCP access"})
		case path == "/healthz":
			// main.py register_routes healthz: GET, JSON {code: 0, msg: ok, resources}.
			if !allow(w, r, http.MethodGet) {
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"code": 0, "msg": "ok", "resources": map[string]any{}})
		case path == "/bots" || strings.HasPrefix(path, "/bots/"):
			webhook(w, r, strings.TrimPrefix(path, "/bots"))
		case strings.HasPrefix(path, "/api/"):
			// main.py static_file: a path under api/ that is no file of the web UI is sent
			// as 404.html, which the Vite build does not contain: Werkzeug's 404.
			if !allow(w, r, http.MethodGet) {
				return
			}
			werkzeugError(w, http.StatusNotFound)
		default:
			// main.py index and static_file: GET only; every other path that is not a file
			// of the web UI gets index.html (the SPA fallback), 200, no-cache.
			if !allow(w, r, http.MethodGet) {
				return
			}
			h := w.Header()
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
			h.Set("Pragma", "no-cache")
			h.Set("Expires", "0")
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				_, _ = w.Write([]byte(indexHTML))
			}
		}
	})
}

// webhook is pkg/api/http/controller/groups/webhooks.py: /bots/<bot_uuid>[/<path>], GET and
// POST, without authentication; this LangBot has no bots, so every uuid is "Bot not found".
func webhook(w http.ResponseWriter, r *http.Request, rest string) {
	uuid, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	if uuid == "" {
		// "/bots" and "/bots/" match no webhook rule; Quart's catch-all serves the SPA only to GET.
		if !allow(w, r, http.MethodGet) {
			return
		}
		werkzeugError(w, http.StatusNotFound)
		return
	}
	if !allow(w, r, http.MethodGet, http.MethodPost) {
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"error": "Bot not found"})
}

// allow answers what Quart does for a method the route lacks: OPTIONS 200 with Allow (automatic
// options), HEAD like GET, anything else 405 with Allow.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || (r.Method == http.MethodHead && m == http.MethodGet) {
			return true
		}
	}
	list := append([]string{}, methods...)
	for _, m := range methods {
		if m == http.MethodGet {
			list = append(list, http.MethodHead)
		}
	}
	list = append(list, http.MethodOptions)
	w.Header().Set("Allow", strings.Join(list, ", "))
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusOK)
		return false
	}
	werkzeugError(w, http.StatusMethodNotAllowed)
	return false
}

// werkzeugError is the HTML page a werkzeug HTTPException renders (Quart returns it as is).
func werkzeugError(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	text := http.StatusText(status)
	_, _ = w.Write([]byte("<!doctype html>\n<html lang=en>\n<title>" + strconv.Itoa(status) + " " + text + "</title>\n<h1>" + text + "</h1>\n"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
