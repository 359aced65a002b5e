package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"golang.org/x/sys/unix"
)

// runKernelDemo mounts the in-memory daemon through the kernel at a
// temporary directory with perfuse relaying, exercises it with ordinary
// file calls, prints the trace statistics and unmounts. mounted says
// whether the kernel mount was made.
func runKernelDemo(out io.Writer) (mounted bool, err error) {
	files, _ := demoTree()
	ours, served, err := serveDemo(files)
	if err != nil {
		return false, err
	}
	mnt, err := os.MkdirTemp("", "perfuse-demo-")
	if err != nil {
		ours.Close()
		return false, err
	}
	defer os.Remove(mnt)
	// Whatever happens below, nothing stays mounted.
	defer unix.Unmount(mnt, unix.MNT_DETACH)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cb, err := perfuse.SocketCallbacks(ours)
	if err != nil {
		return false, err
	}
	u, err := perfuse.Init(cb, &perfuse.MountInfo{Source: "demo", Target: mnt, FSType: "fuse.demo"},
		perfuse.WithDiag(perfuse.DiagTrace))
	if err != nil {
		cb.Umount(nil)
		return false, err
	}
	if err := u.FsInit(ctx); err != nil {
		u.Unmount(ctx)
		<-served
		return false, err
	}
	mainErr := make(chan error, 1)
	go func() { mainErr <- u.Mainloop() }()
	m, err := kernel.Mount(ctx, u, kernel.Config{})
	if err != nil {
		u.Unmount(ctx)
		<-mainErr
		<-served
		return false, err
	}
	minor, _, maxWrite, maxRead := u.Negotiated()
	fmt.Fprintf(out, "perfuse demo (kernel mount): an in-memory go-fuse daemon over a socket, mounted at %s through perfuse (protocol 7.%d, max_write %d, max read %d)\n", mnt, minor, maxWrite, maxRead)
	if line := kernel.MountLine(mnt); line != "" {
		fmt.Fprintf(out, "  /proc/mounts: %s\n", line)
	}

	werr := kernelWorkload(out, mnt, files)
	st, serr := u.FsStatvfs(ctx, nil)
	if serr == nil {
		fmt.Fprintf(out, "statfs: %d blocks, %d files\n", st.Blocks, st.Files)
	}
	fmt.Fprintln(out)
	printStats(out, u)

	uerr := m.Unmount(ctx)
	if err := <-mainErr; err != nil && uerr == nil {
		uerr = err
	}
	if err := <-served; err != nil && uerr == nil {
		uerr = err
	}
	if kernel.MountLine(mnt) == "" {
		fmt.Fprintf(out, "unmounted %s\n", mnt)
	}
	if werr != nil {
		return true, werr
	}
	return true, uerr
}

// kernelWorkload walks, reads and compares the tree with os calls, then
// writes, reads back and removes a file in the writable directory.
func kernelWorkload(out io.Writer, mnt string, files map[string][]byte) error {
	nfiles, nbytes := 0, 0
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if d.IsDir() {
			fmt.Fprintf(out, "  %s/\n", rel)
			return nil
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if want, ok := files[rel]; !ok || !bytes.Equal(got, want) {
			return fmt.Errorf("%s: read %d bytes that differ from the %d served", rel, len(got), len(files[rel]))
		}
		nfiles++
		nbytes += len(got)
		fmt.Fprintf(out, "  %-40s %8d bytes  sha256 %x  ok\n", rel, len(got), sha256.Sum256(got))
		return nil
	})
	if err != nil {
		return err
	}
	if nfiles != len(files) {
		return fmt.Errorf("walked %d files, served %d", nfiles, len(files))
	}
	fmt.Fprintf(out, "read %d files, %d bytes with ordinary file calls, every byte equal to the source\n", nfiles, nbytes)

	p := filepath.Join(mnt, "scratch", "hello.txt")
	msg := []byte("written through the kernel, perfuse and the daemon\n")
	switch err := os.WriteFile(p, msg, 0o644); {
	case err == nil:
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, msg) {
			return fmt.Errorf("%s: read back %q (%v), wrote %q", p, got, err, msg)
		}
		if err := os.Remove(p); err != nil {
			fmt.Fprintf(out, "wrote and read back scratch/hello.txt; remove: %v\n", err)
		} else {
			fmt.Fprintf(out, "wrote, read back and removed scratch/hello.txt (%d bytes)\n", len(msg))
		}
	default:
		// The op table may not have the write operations yet.
		fmt.Fprintf(out, "write test skipped: %v\n", err)
	}
	return nil
}
