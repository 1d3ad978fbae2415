// Package shellquote quotes strings for POSIX sh exactly like Python's shlex.quote, which the
// Box protocol's exec script format depends on (§9.1.3).
package shellquote

import "strings"

// Quote returns s quoted for sh: ” for empty, s itself when it contains only
// [A-Za-z0-9_@%+=:,./-], otherwise s in single quotes with each ' written as '"'"'.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// ExecScript is the script of an exec: the reference's `mkdir -p <workdir> && cd <workdir> &&
// <cmd>`, with the mkdir skipped (by the shell's own test builtin) when the directory already
// exists, which is every exec but a session's first: one process less per command, same
// outcome (a workdir that is a file still fails in mkdir with its message and status).
func ExecScript(workdir, cmd string) string {
	q := Quote(workdir)
	return "{ [ -d " + q + " ] || mkdir -p " + q + "; } && cd " + q + " && " + cmd
}

// ProcessScript is the script of a managed process: ... && exec <command> <args...>.
func ProcessScript(cwd, command string, args []string) string {
	parts := []string{Quote(command)}
	for _, a := range args {
		parts = append(parts, Quote(a))
	}
	q := Quote(cwd)
	return "mkdir -p " + q + " && cd " + q + " && exec " + strings.Join(parts, " ")
}
