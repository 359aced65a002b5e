package perfuse_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"syscall"

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
