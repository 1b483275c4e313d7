package cibatest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stat line of a 6.x kernel: 17 fields, the flushes 16th.
const diskStat = " 1931569   286482 83653642   603187  4305429   978023 96463104   923357        0   682188  1900437   876777       25 92623360   133973  1567273   239918\n"

func TestParseFlushes(t *testing.T) {
	n, err := parseFlushes(diskStat)
	if err != nil || n != 1567273 {
		t.Fatalf("parseFlushes = %d, %v; want 1567273 (the 16th field)", n, err)
	}
	// Before 5.5: no flush fields (15: the discard group ends the line).
	old := strings.Join(strings.Fields(diskStat)[:15], " ")
	if n, err := parseFlushes(old); err == nil {
		t.Fatalf("parseFlushes of 15 fields = %d, want an error", n)
	}
	if _, err := parseFlushes(strings.Replace(diskStat, "1567273", "x", 1)); err == nil {
		t.Fatal("parseFlushes of a field that is no count: want an error")
	}
}

func TestDevNumbers(t *testing.T) {
	for _, c := range []struct{ dev, maj, mnr uint64 }{
		{0xfe00, 254, 0},             // vda
		{0x0801, 8, 1},               // sda1
		{0x12310345, 0x103, 0x12345}, // a minor above 255
		{0x1000_00023400, 0x1234, 0}, // a major above 4095
	} {
		if maj, mnr := devNumbers(c.dev); maj != c.maj || mnr != c.mnr {
			t.Errorf("devNumbers(%#x) = %d:%d, want %d:%d", c.dev, maj, mnr, c.maj, c.mnr)
		}
	}
}

// sysfs lays out a fake /sys with a disk 8:0 and its partition 8:1, whose
// stat counts no flushes (the kernel counts them on the disk).
func sysfs(t *testing.T, partStat string) string {
	t.Helper()
	root := t.TempDir()
	disk := filepath.Join(root, "devices", "virtual", "sda")
	part := filepath.Join(disk, "sda1")
	for _, d := range []string{part, filepath.Join(root, "dev", "block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(disk, "stat"), diskStat)
	write(filepath.Join(part, "stat"), partStat)
	write(filepath.Join(part, "partition"), "1\n")
	for id, target := range map[string]string{"8:0": "../../devices/virtual/sda", "8:1": "../../devices/virtual/sda/sda1"} {
		if err := os.Symlink(target, filepath.Join(root, "dev", "block", id)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFlushCounterOfPartitionReadsTheDisk(t *testing.T) {
	root := sysfs(t, strings.Replace(diskStat, "1567273", "0", 1))
	fc, err := flushCounterOf(root, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if fc.Device != "8:1 sda" {
		t.Errorf("device = %q, want the disk of the partition", fc.Device)
	}
	if n, err := fc.Read(); err != nil || n != 1567273 {
		t.Errorf("read = %d, %v; want the disk's 1567273", n, err)
	}
}

func TestFlushCounterUnavailable(t *testing.T) {
	root := sysfs(t, diskStat)
	if err := os.WriteFile(filepath.Join(root, "devices", "virtual", "sda", "stat"), []byte("1 2 3 4 5 6 7 8 9 10 11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The disk's stat has no flush counter: the partition's is read.
	fc, err := flushCounterOf(root, 8, 1)
	if err != nil || fc.Device != "8:1 sda1" {
		t.Fatalf("flushCounterOf = %+v, %v; want the partition's counter", fc, err)
	}
	if _, err := flushCounterOf(root, 8, 0); err == nil {
		t.Error("a disk whose stat has no flush counter: want an error")
	}
	if _, err := flushCounterOf(root, 0, 42); err == nil {
		t.Error("a device with no /sys/dev/block entry (tmpfs, overlay): want an error")
	}
}
