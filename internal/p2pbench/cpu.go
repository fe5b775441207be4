package p2pbench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cpuTimes is the machine's "cpu" line of /proc/stat, in clock ticks.
type cpuTimes struct{ busy, total uint64 }

func readCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t cpuTimes
	for i, s := range f[1:] {
		if i >= 8 { // guest times are already counted in user and nice
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat field %d %q: %w", i+1, s, err)
		}
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t, nil
}

// CPUSampler records the whole machine's CPU use (every core, every
// process, the harness's included) while a run lasts.
type CPUSampler struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	samples []cpuTimes
	err     error
}

// cpuWindow is the window of the peak figure: a second is long enough to
// average out the scheduler and short enough to catch a saturated phase.
const cpuWindow = 4 // samples of 250 ms

// StartCPU samples /proc/stat every 250 ms until Stop.
func StartCPU() *CPUSampler {
	s := &CPUSampler{stop: make(chan struct{})}
	first, err := readCPU()
	if err != nil {
		s.err = err
	}
	s.samples = append(s.samples, first)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
				if t, err := readCPU(); err == nil {
					s.samples = append(s.samples, t)
				}
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the mean busy fraction over the run and
// the highest over any 1 s window (the whole run when it is shorter).
func (s *CPUSampler) Stop() (mean, peak float64, err error) {
	close(s.stop)
	s.wg.Wait()
	if last, err := readCPU(); err == nil {
		s.samples = append(s.samples, last)
	}
	if s.err != nil {
		return 0, 0, s.err
	}
	frac := func(a, b cpuTimes) float64 {
		if b.total == a.total {
			return 0
		}
		return float64(b.busy-a.busy) / float64(b.total-a.total)
	}
	n := len(s.samples)
	mean = frac(s.samples[0], s.samples[n-1])
	peak = mean
	if n > cpuWindow {
		peak = 0
		for i := cpuWindow; i < n; i++ {
			peak = max(peak, frac(s.samples[i-cpuWindow], s.samples[i]))
		}
	}
	return mean, peak, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// ProcCPU returns the CPU time (user + system) process pid has used.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks uint64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %q: %w", pid, s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
