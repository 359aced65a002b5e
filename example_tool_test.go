package perfuse_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing/fstest"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// startHello starts this test binary as the hello daemon (see TestMain);
// squashfuse would be exec.Command("squashfuse", "-f", "image.sqfs", "/dev/fd/3").
func startHello(ctx context.Context) *perfuse.Daemon {
	d, err := perfuse.Start(ctx, exec.Command(os.Args[0], "/dev/fd/3"))
	if err != nil {
		log.Fatal(err)
	}
	return d
}

// Walk a FUSE daemon's tree with no mount, through the io/fs view.
func ExampleUsermount_FS_walk() {
	ctx := context.Background()
	d := startHello(ctx)
	defer d.Unmount(ctx)
	err := fs.WalkDir(d.FS(ctx, nil), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Println(info.Mode(), p)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// drwxr-xr-x .
	// -r--r--r-- hello.txt
}

// Read one file of a FUSE daemon's tree.
func ExampleUsermount_FS_readFile() {
	ctx := context.Background()
	d := startHello(ctx)
	defer d.Unmount(ctx)
	data, err := fs.ReadFile(d.FS(ctx, nil), "hello.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", data)
	// Output:
	// hello from a FUSE daemon
}

// Serve a FUSE daemon's tree over HTTP, as `perfuse serve` does. The
// view's files read forward only; perfuse serve wraps them with a
// seeker for range requests.
func ExampleUsermount_FS_serveHTTP() {
	ctx := context.Background()
	d := startHello(ctx)
	defer d.Unmount(ctx)
	srv := httptest.NewServer(http.FileServerFS(d.FS(ctx, nil)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/hello.txt")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s: %s", resp.Status, resp.Header.Get("Content-Type"), body)
	// Output:
	// 200 OK text/plain; charset=utf-8: hello from a FUSE daemon
}

// Test your own go-fuse filesystem without mounting it: serve it in the
// test process on one end of a socket pair, attach perfuse to the other,
// and check it with fstest.TestFS and the operation table. No root, no
// /dev/fuse, no fusermount.
func ExampleAttach_testYourFilesystem() {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	// The filesystem under test: here helloRoot, a go-fuse fs.InodeEmbedder.
	// NewServer waits for INIT, which Attach sends.
	go func() {
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
	fmt.Println("fstest:", fstest.TestFS(u.FS(ctx, nil), "hello.txt"))
	st, err := u.FsStatvfs(ctx, nil)
	fmt.Println("statfs:", st != nil, err)
	// Output:
	// fstest: <nil>
	// statfs: true <nil>
}
