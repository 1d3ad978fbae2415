package check

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// backendWarnings are settings of the values stack that are valid but would not do what they
// say with the chosen Box backend. user holds the values the user gave (the stack, without the
// chart's defaults), full the coalesced values.
func backendWarnings(user, full map[string]any) []string {
	box := mapAt(full, "box")
	if enabled, _ := box["enabled"].(bool); !enabled || box["backend"] != "kubernetes" {
		return nil
	}
	var out []string
	docker := mapAt(user, "box", "docker")
	keys := make([]string, 0, len(docker))
	for k := range docker {
		keys = append(keys, "box.docker."+k)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		out = append(out, fmt.Sprintf("%s set, but box.backend=kubernetes does not use box.docker.* (no Docker daemon; sandboxes are Pods configured by box.kubernetes): remove %s", strings.Join(keys, ", "), plural(len(keys), "it", "them")))
	}
	k := mapAt(box, "kubernetes")
	modes, _ := mapAt(k, "boxRoot")["accessModes"].([]any)
	rwx := false
	for _, m := range modes {
		rwx = rwx || m == "ReadWriteMany"
	}
	if !rwx {
		boxTols, _ := box["tolerations"].([]any)
		if len(boxTols) == 0 {
			boxTols, _ = mapAt(full, "global")["tolerations"].([]any)
		}
		sandboxTols, _ := k["tolerations"].([]any)
		for _, t := range boxTols {
			found := false
			for _, s := range sandboxTols {
				found = found || reflect.DeepEqual(t, s)
			}
			if !found {
				out = append(out, fmt.Sprintf("the box tolerates %s but box.kubernetes.tolerations does not: with a box root that is not ReadWriteMany every sandbox runs on boxd's node, so if that node carries the taint the sandboxes stay Pending; add the toleration to box.kubernetes.tolerations", toleration(t)))
			}
		}
	}
	return out
}

func mapAt(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, _ := m[k].(map[string]any)
		m = next
	}
	return m
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// toleration shows a toleration as key=value:effect (key:effect with operator Exists).
func toleration(t any) string {
	m, _ := t.(map[string]any)
	s := fmt.Sprint(m["key"])
	if m["operator"] != "Exists" {
		s += "=" + fmt.Sprint(m["value"])
	}
	if e, _ := m["effect"].(string); e != "" {
		s += ":" + e
	}
	return s
}
