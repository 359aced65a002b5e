package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fstatLatency returns the mean time of one fstat(2) of path, in µs. With
// no attribute caching each one is a GETATTR round trip to the daemon.
func fstatLatency(path string, d time.Duration) (float64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	n, el, err := loop(d, func() (int, error) { return 1, retry(func() error { return unix.Fstat(fd, &st) }) })
	if err != nil {
		return 0, fmt.Errorf("fstat %s: %w", path, err)
	}
	return el.Seconds() * 1e6 / float64(n), nil
}

// createRate returns how many files per second can be created, stat'ed and
// unlinked in dir, one after the other.
func createRate(dir string, d time.Duration) (float64, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	i := 0
	n, el, err := loop(d, func() (int, error) {
		i++
		name := fmt.Sprintf("f%d", i)
		// No O_EXCL: a CREATE interrupted after it reached the daemon
		// may have made the file, and is tried again.
		var fd int
		err := retry(func() (err error) {
			fd, err = unix.Openat(dfd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			return err
		})
		if err != nil {
			return 0, err
		}
		unix.Close(fd)
		if err := retry(func() error { return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
			return 0, err
		}
		interrupted := false
		err = retry(func() error {
			err := unix.Unlinkat(dfd, name, 0)
			if err == unix.ENOENT && interrupted {
				return nil // the interrupted UNLINK did it
			}
			interrupted = err == unix.EINTR
			return err
		})
		return 1, err
	})
	if err != nil {
		return 0, fmt.Errorf("create in %s: %w", dir, err)
	}
	return float64(n) / el.Seconds(), nil
}

// readdirRate lists dir and lstats each entry (as ls -l does), over and
// over, and returns the entries per second.
func readdirRate(dir string, d time.Duration) (float64, error) {
	var st unix.Stat_t
	n, el, err := loop(d, func() (int, error) {
		f, err := os.Open(dir)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return 0, err
		}
		for _, name := range names {
			if err := retry(func() error { return unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
				return 0, err
			}
		}
		return len(names), nil
	})
	if err != nil {
		return 0, fmt.Errorf("readdir %s: %w", dir, err)
	}
	return float64(n) / el.Seconds(), nil
}

// loop calls step until d has passed (at least once), and returns the units
// it counted and the time taken.
func loop(d time.Duration, step func() (int, error)) (n int, el time.Duration, err error) {
	start := time.Now()
	for n == 0 || el < d {
		k, err := step()
		if err != nil {
			return 0, 0, err
		}
		n += k
		el = time.Since(start)
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("nothing to count")
	}
	return n, el, nil
}

// retry calls f again while it fails with EINTR, as package os does: a
// FUSE request interrupted by a signal (Go's runtime sends them) may end
// with EINTR when the daemon or relay honours the interrupt.
func retry(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
