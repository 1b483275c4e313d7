package badgerstore

import (
	"os"
	"syscall"
)

// fdatasync writes f's data to disk (and its metadata only where reading
// the data needs it: the logs are preallocated, so a write changes no size).
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
