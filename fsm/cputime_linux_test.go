package fsm

import (
	"syscall"
	"time"
)

const (
	cpuProcess = syscall.RUSAGE_SELF
	cpuThread  = syscall.RUSAGE_THREAD
)

// cpuTime is the user+system CPU time of the process or the calling thread.
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
