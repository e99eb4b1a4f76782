// Command pause is the pod sandbox's process: it keeps the pod's namespaces alive, reaps
// zombies (it is PID 1 of the sandbox's PID namespace when the pod shares one), and exits
// cleanly on SIGTERM or SIGINT. Built with CGO_ENABLED=0, so the image holds only this file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is reported by `pause -v` so tests can tell this binary from another pause image.
const version = "strata-pause 1"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println(version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "warning: pause should be the first process in its PID namespace")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child without blocking; one SIGCHLD may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
