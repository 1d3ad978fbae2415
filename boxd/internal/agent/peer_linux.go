package agent

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// checkPeer refuses a peer process that descends from this agent (one of its commands, their
// children, or an orphan it adopted as PID 1 or subreaper). Processes started through the
// container runtime's exec (boxd's `boxagent connect`) have no parent inside the sandbox.
func checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("read peer credentials: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("read peer credentials: %w", cerr)
	}
	self := os.Getpid()
	if int(cred.Pid) == self {
		return nil
	}
	for pid, hops := int(cred.Pid), 0; pid > 0; hops++ {
		if hops > 4096 {
			return fmt.Errorf("peer process %d: parent chain too long", cred.Pid)
		}
		ppid, err := parentPid(pid)
		if err != nil {
			return fmt.Errorf("peer process %d: %w", cred.Pid, err)
		}
		if ppid == self {
			return fmt.Errorf("peer process %d runs under the agent (a sandbox command or its descendant): only boxd's `boxagent connect` may connect", cred.Pid)
		}
		pid = ppid
	}
	return nil
}

// parentPid reads the parent of pid from /proc/<pid>/stat (the field after the command name,
// which may itself contain spaces and parentheses, and the state).
func parentPid(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read its parent: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("unreadable /proc/%d/stat: %w", pid, err)
	}
	return ppid, nil
}
