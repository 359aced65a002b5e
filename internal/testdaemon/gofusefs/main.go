// Command gofusefs is a go-fuse loopback daemon as go-fuse programs
// usually are (fs.Mount, which runs fusermount and checks the mount with
// go-fuse's poll probe): "gofusefs [-ro] SOURCE MOUNTPOINT".
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	ro := flag.Bool("ro", false, "mount read-only")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: gofusefs [-ro] SOURCE MOUNTPOINT")
		os.Exit(2)
	}
	root, err := fs.NewLoopbackRoot(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gofusefs:", err)
		os.Exit(1)
	}
	mo := fuse.MountOptions{FsName: "gofusefs", Name: "gofusefs", DisableSplice: true}
	if *ro {
		mo.Options = append(mo.Options, "ro")
	}
	srv, err := fs.Mount(flag.Arg(1), root, &fs.Options{MountOptions: mo})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gofusefs: mount:", err)
		os.Exit(1)
	}
	srv.Wait()
}
