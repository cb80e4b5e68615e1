//go:build linux

// fsyncprobe measures how long a small write + fdatasync (a Raft log
// append) waits while another file of some size is written on the same
// disk, either synced once at the end (as Raft's file snapshot store did)
// or every -chunk MiB (as HATS's snapshot sink does now). It writes only
// into -dir and removes its files.
//
//	go run ./scripts/fsyncprobe -dir /var/lib/hats -big 200 -chunk 0
//	go run ./scripts/fsyncprobe -dir /var/lib/hats -big 200 -chunk 8
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the disk to probe")
	bigMB := flag.Int("big", 200, "MiB of the big file")
	chunkMB := flag.Int("chunk", 0, "fdatasync the big file every this many MiB (0: once, at the end)")
	flag.Parse()
	if err := run(*dir, *bigMB, *chunkMB); err != nil {
		fmt.Fprintln(os.Stderr, "fsyncprobe:", err)
		os.Exit(1)
	}
}

func run(dir string, bigMB, chunkMB int) error {
	wal, err := os.Create(filepath.Join(dir, "fsyncprobe.wal"))
	if err != nil {
		return err
	}
	defer os.Remove(wal.Name())
	defer wal.Close()
	big, err := os.Create(filepath.Join(dir, "fsyncprobe.big"))
	if err != nil {
		return err
	}
	defer os.Remove(big.Name())
	defer big.Close()

	var done atomic.Bool
	bigTook := make(chan time.Duration, 1)
	go func() {
		defer done.Store(true)
		time.Sleep(300 * time.Millisecond) // some baseline appends first
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		start := time.Now()
		for i := 1; i <= bigMB; i++ {
			if _, err := big.Write(buf); err != nil {
				break
			}
			if chunkMB > 0 && i%chunkMB == 0 {
				_ = syscall.Fdatasync(int(big.Fd()))
			}
		}
		_ = big.Sync()
		bigTook <- time.Since(start)
		time.Sleep(300 * time.Millisecond) // and some after
	}()

	rec := make([]byte, 4096)
	var lat []time.Duration
	for i := 0; !done.Load() && i < 1_000_000; i++ {
		start := time.Now()
		if _, err := wal.Write(rec); err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(wal.Fd())); err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
		time.Sleep(500 * time.Microsecond)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		return lat[int(p*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	fmt.Printf("big=%dMiB chunk=%dMiB big file took %v; %d log appends: p50 %v p99 %v p99.9 %v max %v\n",
		bigMB, chunkMB, (<-bigTook).Round(time.Millisecond), len(lat), q(.5), q(.99), q(.999), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}
