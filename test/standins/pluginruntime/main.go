// Command pluginruntime is the offline stand-in for the LangBot plugin runtime in end-to-end
// tests: it answers on 5400 (/healthz, /readyz) and is ready only when the chart gave it a
// control token of at least 32 characters.
package main

import (
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	tok := strings.TrimSpace(os.Getenv("LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN"))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"live":true}`)) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if len(tok) < 32 {
			http.Error(w, `{"ready":false,"reason":"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN missing or shorter than 32 characters"}`, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"ready":true}`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("plugin runtime stand-in\n")) })
	log.Printf("plugin runtime stand-in on :5400 (token present: %v)", len(tok) >= 32)
	log.Fatal(http.ListenAndServe(":5400", mux))
}
