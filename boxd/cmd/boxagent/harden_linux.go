package main

import "syscall"

// harden makes the agent non-dumpable: the sandbox's own processes (same user, no
// CAP_SYS_PTRACE) can then neither ptrace it nor open its /proc/<pid>/fd, i.e. cannot write
// forged frames into boxd's stream or read the commands boxd sends. Commands it starts are
// dumpable again (execve resets the flag).
func harden() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
