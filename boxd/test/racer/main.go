//go:build linux

// Command racer is the sandbox side of the skill-store race tests (boxd/test/conformance):
// built static by the test, bind-mounted into a sandbox and run in a skill package that the
// sandbox has mounted rw, it swaps names of that package in a loop with
// renameat2(RENAME_EXCHANGE), as code in a sandbox can without any capability.
//
//	racer dir NAME TARGET [NAME TARGET ...]  exchange directory NAME with a symlink to TARGET
//	racer fifo NAME [NAME ...]               exchange file NAME with a FIFO
//
// Each pair runs in its own goroutine. READY is created in the working directory once every
// pair is set up; the racer stops when a file STOP appears there (checked every 64 swaps),
// when a name it swaps has gone (the package was deleted), or after an hour. It restores the
// original names and prints one line per pair: "NAME swaps=N".
package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: racer dir NAME TARGET [NAME TARGET ...] | racer fifo NAME [NAME ...]")
	}
	var pairs [][2]string // name, its swap partner
	switch os.Args[1] {
	case "dir":
		args := os.Args[2:]
		if len(args)%2 != 0 {
			fail("racer dir: NAME TARGET pairs expected")
		}
		for i := 0; i < len(args); i += 2 {
			partner := args[i] + ".swap"
			_ = os.Remove(partner)
			if err := os.Symlink(args[i+1], partner); err != nil {
				fail(err.Error())
			}
			pairs = append(pairs, [2]string{args[i], partner})
		}
	case "fifo":
		for _, name := range os.Args[2:] {
			partner := name + ".fifo"
			_ = os.Remove(partner)
			if err := unix.Mkfifo(partner, 0o644); err != nil {
				fail(err.Error())
			}
			pairs = append(pairs, [2]string{name, partner})
		}
	default:
		fail("unknown mode " + os.Args[1])
	}
	if err := os.WriteFile("READY", nil, 0o644); err != nil {
		fail(err.Error())
	}
	deadline := time.Now().Add(time.Hour)
	counts := make([]int, len(pairs))
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				if n%64 == 0 {
					if _, err := os.Lstat("STOP"); err == nil || time.Now().After(deadline) {
						break
					}
				}
				err := unix.Renameat2(unix.AT_FDCWD, p[0], unix.AT_FDCWD, p[1], unix.RENAME_EXCHANGE)
				if errors.Is(err, unix.ENOENT) {
					return // the package is gone
				}
				if err != nil {
					fail(fmt.Sprintf("exchange %s: %v", p[0], err))
				}
				counts[i]++
			}
			if counts[i]%2 == 1 { // put the original back under its name
				_ = unix.Renameat2(unix.AT_FDCWD, p[0], unix.AT_FDCWD, p[1], unix.RENAME_EXCHANGE)
			}
		}()
	}
	wg.Wait()
	for i, p := range pairs {
		fmt.Printf("%s swaps=%d\n", p[0], counts[i])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "racer:", msg)
	os.Exit(2)
}
