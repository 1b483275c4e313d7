//go:build !linux

package badgerstore

import "os"

// fdatasync writes f to disk (fsync where the system has no fdatasync).
func fdatasync(f *os.File) error { return f.Sync() }
