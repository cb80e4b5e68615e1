//go:build !linux

package fsm

import "time"

const (
	cpuProcess = 0
	cpuThread  = 1
)

// cpuTime is not measured here: BenchmarkApplyOrders then reports no CPU
// per command.
func cpuTime(int) time.Duration { return 0 }
