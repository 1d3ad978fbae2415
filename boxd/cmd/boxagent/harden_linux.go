package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

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

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER (linux/prctl.h), which package syscall lacks.
const prSetChildSubreaper = 36

// guardInit prepares the daemon to be the container's init: orphans are re-parented to it
// (child subreaper, when it is not PID 1 already) and no signal a sandbox process can send
// ends it. Go's runtime exits on SIGHUP, SIGINT and SIGTERM and dumps on SIGQUIT, SIGABRT
// and others; catching them (not ignoring: an ignored signal would stay ignored in every
// command) keeps the daemon up. The kubelet stops the container with SIGKILL after the grace
// period, as it did the image's `sh` keep-alive, which ignored SIGTERM as PID 1.
func guardInit() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("become a child subreaper: %v", errno)
	}
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGILL,
		syscall.SIGTRAP, syscall.SIGABRT, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGUSR1, syscall.SIGSEGV,
		syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGSTKFLT, syscall.SIGXCPU, syscall.SIGXFSZ,
		syscall.SIGVTALRM, syscall.SIGIO, syscall.SIGPWR, syscall.SIGSYS)
	return nil
}
