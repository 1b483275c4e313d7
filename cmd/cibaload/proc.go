package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// cpuSample is a snapshot of CPU times, in clock ticks.
type cpuSample struct {
	ok      bool
	busy    uint64 // the machine: every state but idle and iowait
	proxy   uint64 // utime+stime of the proxy (0 without a PID)
	self    uint64 // utime+stime of this process
	helpers uint64 // utime+stime of the helper processes (the SMTP sink)
	hasProx bool
}

// helperPIDs are processes of the bench besides the proxy and this one
// (run --helper-pid), whose CPU is told apart from the rest.
var helperPIDs []int

func sampleCPU(pid int) cpuSample {
	var s cpuSample
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return s
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		s.busy += n
	}
	s.self, _ = procCPU("self")
	for _, h := range helperPIDs {
		n, _ := procCPU(strconv.Itoa(h))
		s.helpers += n
	}
	if pid > 0 {
		var err error
		s.proxy, err = procCPU(strconv.Itoa(pid))
		s.hasProx = err == nil
	}
	s.ok = true
	return s
}

// procCPU returns utime+stime of /proc/<id>/stat.
func procCPU(id string) (uint64, error) {
	data, err := os.ReadFile("/proc/" + id + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields start after its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%s/stat", id)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%s/stat", id)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st, nil
}

func cpuUse(a, b cpuSample, d time.Duration) *CPUUse {
	if !a.ok || !b.ok || d <= 0 {
		return nil
	}
	cores := func(ticks uint64) float64 { return float64(ticks) / clockTicks / d.Seconds() }
	u := &CPUUse{
		Cores:       runtime.NumCPU(),
		MachineBusy: cores(b.busy - a.busy),
		LoadGen:     cores(b.self - a.self),
	}
	if a.hasProx && b.hasProx {
		u.Proxy = cores(b.proxy - a.proxy)
	}
	if len(helperPIDs) > 0 {
		u.Helpers = cores(b.helpers - a.helpers)
	}
	u.Rest = max(0, u.MachineBusy-u.Proxy-u.LoadGen-u.Helpers)
	return u
}

// procMemory returns VmHWM (peak RSS) and VmRSS of a process, in MiB.
func procMemory(pid int) (hwm, rss float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		fs := strings.Fields(val)
		if len(fs) < 1 {
			continue
		}
		kb, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			continue
		}
		if name == "VmHWM" {
			hwm = kb / 1024
		} else {
			rss = kb / 1024
		}
		found++
	}
	if found < 2 {
		return hwm, rss, fmt.Errorf("no VmHWM/VmRSS in /proc/%d/status", pid)
	}
	return hwm, rss, sc.Err()
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// writeJSON writes v indented to path, or to stdout when path is empty.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
