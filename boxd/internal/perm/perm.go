// Package perm gives the permission bits of what boxd creates in the box root (workspaces,
// the skill store) as the process umask shapes them, the way mkdir(2) and open(2) apply it:
// 0777/0666 minus the umask. With the Docker backend the umask is the container's 022 (0755
// directories, 0644 files, as always); the kubernetes backend sets 002 at start-up, because
// there boxd runs as a non-root uid while LangBot and the sandboxes run as root without
// CAP_DAC_OVERRIDE: they share boxd's group (fsGroup / supplementalGroups) and need its
// directories and files group-writable.
package perm

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// DefaultUmask is assumed when /proc/self/status cannot tell (pre-4.7 kernels).
const DefaultUmask = 0o022

// SharedUmask is the kubernetes backend's: group-writable.
const SharedUmask = 0o002

// Umask reads the process umask from /proc/self/status without changing it.
func Umask() os.FileMode {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return DefaultUmask
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return DefaultUmask
			}
			return os.FileMode(n) & 0o777
		}
	}
	return DefaultUmask
}

// File is the mode of a regular file boxd creates: 0666 minus the umask.
func File() os.FileMode { return 0o666 &^ Umask() }

// Exec is the mode of an executable file: 0777 minus the umask.
func Exec() os.FileMode { return 0o777 &^ Umask() }

// Dir is what to pass to mkdir: the kernel applies the umask itself.
const Dir os.FileMode = 0o777
