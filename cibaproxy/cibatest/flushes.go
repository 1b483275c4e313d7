package cibatest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// flushField is the 0-based index of "flush I/Os" (flush requests
// completed) in a block device's stat file: the 16th of its 17 fields,
// after the read, write and discard groups of four and in_flight, io_ticks
// and time_in_queue. Kernels before 5.5 write 15 fields or fewer.
const flushField = 15

// FlushCounter reads the flush requests completed by the block device that
// holds a directory: the cost of the fsyncs of a store kept there, for the
// benchmarks. The counter is the device's: every process's flushes count,
// not only the proxy's.
type FlushCounter struct {
	Path   string // the stat file
	Device string // "MAJ:MIN name"
}

// NewFlushCounter finds the stat file of the block device holding dir
// under sysRoot (/sys): /sys/dev/block/MAJ:MIN/stat, or the whole disk's
// when MAJ:MIN is a partition (the kernel counts flushes on the disk only).
func NewFlushCounter(sysRoot, dir string) (*FlushCounter, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	maj, mnr := devNumbers(uint64(st.Dev))
	return flushCounterOf(sysRoot, maj, mnr)
}

// devNumbers splits a Linux dev_t into its major and minor numbers.
func devNumbers(dev uint64) (maj, mnr uint64) {
	maj = (dev>>8)&0xfff | (dev>>32)&0xfffff000
	mnr = dev&0xff | (dev>>12)&0xffffff00
	return maj, mnr
}

func flushCounterOf(sysRoot string, maj, mnr uint64) (*FlushCounter, error) {
	id := fmt.Sprintf("%d:%d", maj, mnr)
	link := filepath.Join(sysRoot, "dev", "block", id)
	devDir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, fmt.Errorf("device %s is not a block device (no %s)", id, link)
	}
	candidates := []string{devDir}
	if _, err := os.Stat(filepath.Join(devDir, "partition")); err == nil {
		candidates = []string{filepath.Dir(devDir), devDir}
	}
	var errs []error
	for _, d := range candidates {
		path := filepath.Join(d, "stat")
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := parseFlushes(string(data)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		return &FlushCounter{Path: path, Device: id + " " + filepath.Base(d)}, nil
	}
	return nil, fmt.Errorf("device %s: no flush counter: %w", id, errors.Join(errs...))
}

// parseFlushes returns the flush requests completed of a block device's
// stat line.
func parseFlushes(line string) (int64, error) {
	f := strings.Fields(line)
	if len(f) <= flushField {
		return 0, fmt.Errorf("%d fields, no flush counter (kernel older than 5.5)", len(f))
	}
	n, err := strconv.ParseInt(f[flushField], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("flush counter %q is not a count", f[flushField])
	}
	return n, nil
}

// Read returns the counter now.
func (fc *FlushCounter) Read() (int64, error) {
	data, err := os.ReadFile(fc.Path)
	if err != nil {
		return 0, err
	}
	return parseFlushes(string(data))
}
