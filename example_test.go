package perfuse_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// helloRoot is a one-file go-fuse filesystem.
type helloRoot struct{ gofs.Inode }

func (r *helloRoot) OnAdd(ctx context.Context) {
	f := &gofs.MemRegularFile{Data: []byte("hello from a FUSE daemon\n"), Attr: fuse.Attr{Mode: 0o444}}
	r.AddChild("hello.txt", r.NewPersistentInode(ctx, f, gofs.StableAttr{}), false)
}

// TestMain lets this test binary double as the examples' FUSE daemon: run
// with "/dev/fd/3" as its only argument, it serves hello.txt there.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == "/dev/fd/3" {
		os.Exit(serveHello(os.Args[1]))
	}
	os.Exit(m.Run())
}

// serveHello is a go-fuse daemon serving helloRoot on mountpoint until
// SIGTERM, on which it exits 0, or until its connection ends.
func serveHello(mountpoint string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	srv, err := fuse.NewServer(gofs.NewNodeFS(&helloRoot{}, nil), mountpoint, &fuse.MountOptions{DisableSplice: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello daemon:", err)
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

// Run a FUSE daemon as a child process and use it with no kernel mount.
// Start hands the daemon its end of a socket pair as fd 3, which it takes
// for its /dev/fuse. Here the daemon is this test binary serving hello.txt
// with go-fuse; squashfuse would be
// exec.Command("squashfuse", "-f", "image.sqfs", "/dev/fd/3").
func ExampleStart() {
	ctx := context.Background()
	daemon := os.Args[0]
	cmd := exec.Command(daemon, "/dev/fd/3") // any FUSE daemon, "/dev/fd/3" as its mountpoint
	d, err := perfuse.Start(ctx, cmd)        // socket pair, fd 3, INIT
	if err != nil {
		log.Fatal(err)
	}
	e, err := d.NodeLookup(ctx, nil, d.Root(), "hello.txt") // one FUSE frame per call
	if err != nil {
		log.Fatal(err)
	}
	data, err := fs.ReadFile(d.FS(ctx, nil), "hello.txt") // or the io/fs view
	if err != nil {
		log.Fatal(err)
	}
	err = d.Unmount(ctx) // DESTROY, end the daemon, reap it
	fmt.Printf("hello.txt, %d bytes: %s", e.Attr.Size, data)
	fmt.Println("unmount:", err, "daemon:", d.ProcessState())
	// Output:
	// hello.txt, 25 bytes: hello from a FUSE daemon
	// unmount: <nil> daemon: exit status 0
}

// Library mode: a FUSE daemon that would open /dev/fuse and mount(2) asks
// perfused instead, and serves FUSE on the socket it gets. It needs a
// perfused to connect to or start (and that perfused, root and /dev/fuse),
// so this example is compiled but not run.
func ExampleOpen() {
	fd, err := perfuse.Open("/dev/fuse", os.O_RDWR, 0) // a socket to perfused, not the device
	if err != nil {
		log.Fatal(err)
	}
	err = perfuse.Mount("src", "/mnt/x", "fuse.mine", 0, fmt.Sprintf("fd=%d", fd))
	if err != nil {
		log.Fatal(err)
	}
	// then serve FUSE on fd, e.g. go-fuse with mountpoint fmt.Sprintf("/dev/fd/%d", fd)
	srv, err := fuse.NewServer(gofs.NewNodeFS(&helloRoot{}, nil), fmt.Sprintf("/dev/fd/%d", fd),
		&fuse.MountOptions{DisableSplice: true})
	if err != nil {
		log.Fatal(err)
	}
	srv.Serve()
}

// Drive a FUSE daemon with no kernel mount: the daemon serves on one end of
// a socketpair as if it were /dev/fuse, perfuse speaks FUSE on the other.
func ExampleAttach() {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		// Any FUSE daemon takes "/dev/fd/N" as an already open connection.
		srv, err := fuse.NewServer(gofs.NewNodeFS(&helloRoot{}, nil), fmt.Sprintf("/dev/fd/%d", fds[1]),
			&fuse.MountOptions{DisableSplice: true, Logger: log.New(io.Discard, "", 0)})
		if err == nil {
			srv.Serve()
		}
	}()

	ctx := context.Background()
	u, err := perfuse.Attach(ctx, os.NewFile(uintptr(fds[0]), "fuse"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer u.Unmount(ctx)

	// One FUSE request per call: LOOKUP, OPEN, READ, RELEASE, FORGET.
	e, err := u.NodeLookup(ctx, nil, u.Root(), "hello.txt")
	if err != nil {
		log.Fatal(err)
	}
	h, err := u.NodeOpen(ctx, nil, e.Node, syscall.O_RDONLY)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := u.NodeRead(ctx, nil, h, buf, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes: %s", n, buf[:n])
	u.NodeRelease(ctx, h)
	u.NodeReclaim(ctx, e.Node, 1)

	// Or through io/fs.
	names, _ := fs.Glob(u.FS(ctx, nil), "*.txt")
	fmt.Println(names)
	// Output:
	// 25 bytes: hello from a FUSE daemon
	// [hello.txt]
}
