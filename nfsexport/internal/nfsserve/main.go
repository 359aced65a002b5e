// Command nfsserve is what "perfuse nfs" runs, for the tests to run as an
// unprivileged user: "nfsserve [-addr HOST:PORT] [-ro] -- DAEMON ARGS...".
// It starts the FUSE daemon mount-free (DAEMON gets the FUSE socket as
// fd 3, so name /dev/fd/3 as its mountpoint), exports it over NFSv3, and
// prints "nfs ADDR" once it listens. SIGINT or SIGTERM ends it;
// so does the daemon's exit, with status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/nfsexport"
)

func main() {
	addr := flag.String("addr", nfsexport.DefaultAddr, "`address` to listen on (another than loopback lets other machines in: see the security notes)")
	ro := flag.Bool("ro", false, "export read-only")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: nfsserve [-addr HOST:PORT] [-ro] -- DAEMON ARGS...")
		os.Exit(2)
	}
	if err := run(*addr, *ro, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "nfsserve:", err)
		os.Exit(1)
	}
}

func run(addr string, ro bool, argv []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	d, err := perfuse.Start(ctx, exec.Command(argv[0], argv[1:]...))
	cancel()
	if err != nil {
		return err
	}
	s := nfsexport.New(d.Usermount, nfsexport.Options{ReadOnly: ro})
	l, err := s.Listen(addr)
	if err != nil {
		d.Unmount(context.Background())
		return err
	}
	fmt.Printf("nfs %s\n", l.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		s.Close()
	}()
	serr := s.Serve(l)
	s.Close()
	uctx, ucancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ucancel()
	uerr := d.Unmount(uctx)
	if serr != nil {
		return errors.Join(serr, uerr)
	}
	return nil
}
