package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/sock"
)

//go:embed demofs
var demoFiles embed.FS

// demoTree loads the embedded files into an in-memory go-fuse tree, plus
// one generated file large enough to need several READs.
func demoTree() (map[string][]byte, *gofs.Inode) {
	files := map[string][]byte{}
	fs.WalkDir(demoFiles, "demofs", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := demoFiles.ReadFile(p)
			files[strings.TrimPrefix(p, "demofs/")] = b
		}
		return nil
	})
	big := make([]byte, 1<<20+12345)
	for i := range big {
		big[i] = byte(i*31 + i>>8)
	}
	files["data/big.bin"] = big
	return files, &gofs.Inode{}
}

type memRoot struct {
	gofs.Inode
	files map[string][]byte
}

// scratchDir is the demo's one writable directory: files created in it
// are in-memory files that take writes.
type scratchDir struct{ gofs.Inode }

func (d *scratchDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o777
	return 0
}

func (d *scratchDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	f := &gofs.MemRegularFile{Attr: fuse.Attr{Mode: mode & 0o7777}}
	ch := d.NewPersistentInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG})
	d.AddChild(name, ch, true)
	f.Getattr(ctx, nil, &fuse.AttrOut{})
	out.Mode = syscall.S_IFREG | mode&0o7777
	return ch, nil, 0, 0
}

func (d *scratchDir) Unlink(ctx context.Context, name string) syscall.Errno {
	if d.GetChild(name) == nil {
		return syscall.ENOENT
	}
	d.RmChild(name)
	return 0
}

func (r *memRoot) OnAdd(ctx context.Context) {
	names := make([]string, 0, len(r.files))
	for n := range r.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		dir := &r.Inode
		parts := strings.Split(name, "/")
		for _, p := range parts[:len(parts)-1] {
			child := dir.GetChild(p)
			if child == nil {
				child = dir.NewPersistentInode(ctx, &gofs.Inode{}, gofs.StableAttr{Mode: syscall.S_IFDIR})
				dir.AddChild(p, child, false)
			}
			dir = child
		}
		f := &gofs.MemRegularFile{Data: r.files[name], Attr: fuse.Attr{Mode: 0444}}
		dir.AddChild(parts[len(parts)-1], dir.NewPersistentInode(ctx, f, gofs.StableAttr{}), false)
	}
	r.AddChild("scratch", r.NewPersistentInode(ctx, &scratchDir{}, gofs.StableAttr{Mode: syscall.S_IFDIR}), false)
}

// runDemo runs the demo through a kernel mount when this process can make
// one, then mount-free.
func runDemo(out io.Writer) error {
	// go-fuse reports the end of its connection through the standard log
	// package; perfuse's own diagnostics go through slog to stderr.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	log.SetOutput(io.Discard)
	if ok, why := kernel.CanMount(); ok {
		mounted, err := runKernelDemo(out)
		switch {
		case err != nil && mounted:
			return fmt.Errorf("kernel mount: %w", err)
		case err != nil:
			// Root with /dev/fuse, but no mount (a container without
			// CAP_SYS_ADMIN, say): the mount-free run still shows perfuse.
			fmt.Fprintf(out, "perfuse demo: kernel mount failed (%v); running the mount-free workload only\n", err)
		}
		fmt.Fprintln(out)
	} else {
		fmt.Fprintf(out, "perfuse demo: no kernel mount (%s); running the mount-free workload only\n\n", why)
	}
	return runMountFreeDemo(out)
}

// serveDemo starts the in-memory go-fuse daemon on one end of a new
// socketpair and returns the other end and the channel Serve's end is
// reported on.
func serveDemo(files map[string][]byte) (*os.File, chan error, error) {
	ours, theirs, _, err := sock.SizedPair(int(perfuse.BufVarFromEnv("PERFUSE_BUFSIZE", perfuse.DefaultBufSize)))
	if err != nil {
		return nil, nil, err
	}
	root := &memRoot{files: files}
	served := make(chan error, 1)
	go func() {
		defer theirs.Close()
		raw := gofs.NewNodeFS(root, &gofs.Options{})
		// The daemon believes /dev/fd/N is its /dev/fuse; splice stays off
		// because a socket takes no spliced pages.
		srv, err := fuse.NewServer(raw, fmt.Sprintf("/dev/fd/%d", theirs.Fd()), &fuse.MountOptions{DisableSplice: true, FsName: "demo",
			// go-fuse logs its end-of-connection reads; the demo ends it on purpose.
			Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			served <- err
			return
		}
		srv.Serve()
		served <- nil
	}()
	return ours, served, nil
}

// demoDaemonEnv makes this binary the mount-free demo's FUSE daemon, with
// the variable's value as its mountpoint: the demo runs itself with it set,
// through perfuse.Start, as a program would run squashfuse.
const demoDaemonEnv = "PERFUSE_DEMO_DAEMON"

func init() {
	if mountpoint := os.Getenv(demoDaemonEnv); mountpoint != "" {
		os.Exit(runDemoDaemon(mountpoint))
	}
}

// runDemoDaemon serves the demo tree on mountpoint until the connection
// ends, which is how perfuse.Start's Unmount ends a go-fuse daemon, or
// until SIGTERM.
func runDemoDaemon(mountpoint string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	// go-fuse logs the end of its connection as a read error.
	log.SetOutput(io.Discard)
	files, _ := demoTree()
	raw := gofs.NewNodeFS(&memRoot{files: files}, &gofs.Options{})
	srv, err := fuse.NewServer(raw, mountpoint, &fuse.MountOptions{DisableSplice: true, FsName: "demo",
		Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfused demo daemon:", err)
		return 1
	}
	served := make(chan struct{})
	go func() {
		srv.Serve()
		close(served)
	}()
	select {
	case <-stop:
	case <-served:
	}
	return 0
}

// runMountFreeDemo runs the demo daemon as a child process with
// perfuse.Start, walks and reads the whole tree through perfuse's
// operation table (its io/fs view), checks every byte, and prints the FUSE
// trace statistics.
func runMountFreeDemo(out io.Writer) error {
	files, _ := demoTree()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), demoDaemonEnv+"=/dev/fd/3")
	cmd.Stderr = os.Stderr
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := perfuse.Start(ctx, cmd, perfuse.WithDiag(perfuse.DiagTrace))
	if err != nil {
		return err
	}
	minor, _, maxWrite, maxRead := d.Negotiated()
	fmt.Fprintf(out, "perfuse demo (mount-free): INIT done with the in-memory go-fuse daemon run as a child process (pid %d) by perfuse.Start, over a socket (protocol 7.%d, max_write %d, max read %d)\n",
		cmd.Process.Pid, minor, maxWrite, maxRead)

	fsys := d.FS(ctx, nil)
	var nfiles, nbytes int
	werr := fs.WalkDir(fsys, ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			fmt.Fprintf(out, "  %s/\n", p)
			return nil
		}
		got, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if want := files[p]; !bytes.Equal(got, want) {
			return fmt.Errorf("%s: read %d bytes that differ from the %d served", p, len(got), len(want))
		}
		nfiles++
		nbytes += len(got)
		fmt.Fprintf(out, "  %-40s %8d bytes  sha256 %x  ok\n", p, len(got), sha256.Sum256(got))
		return nil
	})
	if werr == nil && nfiles != len(files) {
		werr = fmt.Errorf("walked %d files, served %d", nfiles, len(files))
	}
	st, serr := d.FsStatvfs(ctx, nil)
	if serr == nil {
		fmt.Fprintf(out, "statfs: %d blocks, %d files\n", st.Blocks, st.Files)
	}
	fmt.Fprintf(out, "read %d files, %d bytes, every byte equal to the source\n\n", nfiles, nbytes)
	printStats(out, d.Usermount)
	uerr := d.Unmount(ctx)
	fmt.Fprintf(out, "unmounted; the daemon ended with %v\n", d.ProcessState())
	if werr != nil {
		return werr
	}
	if serr != nil {
		return serr
	}
	return uerr
}

func printStats(out io.Writer, u *perfuse.Usermount) {
	fmt.Fprintln(out, "FUSE trace statistics (operation, count, min, avg, max):")
	for _, s := range u.TraceStats() {
		if s.Count > 0 {
			fmt.Fprintf(out, "  %-12s %6d  %10s %10s %10s\n", s.Op, s.Count, s.Min, s.Avg, s.Max)
		}
	}
}
