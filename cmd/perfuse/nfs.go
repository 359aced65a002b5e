package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/perfuse-go/perfuse/nfsexport"
)

func init() {
	register(&command{
		name:    "nfs",
		args:    "[-addr HOST:PORT] [-ro]",
		summary: "export the daemon's tree over NFSv3, MOUNT on the same port",
		help: `Serves until SIGINT or SIGTERM, or until the daemon ends (status 1). The
address serving is printed on stderr as "serving nfs HOST:PORT". Another
machine mounts it with
  mount -t nfs -o vers=3,proto=tcp,port=PORT,mountport=PORT HOST:/ /mnt
Every client acts as the user running perfuse: NFSv3's AUTH_SYS trusts
the client, and go-nfs passes no identity on. The default address is on
the loopback interface, where only root's and this user's connections
are taken; any other address (-addr 0.0.0.0:2049) lets in whoever can
reach it, with a warning. Locks and extended attributes are not served.`,
		validate: nargs(0, 0, "no arguments"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			addr := fl.String("addr", nfsexport.DefaultAddr, "address to listen on (port 0: any free port)")
			ro := fl.Bool("ro", false, "export read-only: every change is refused with NFS3ERR_ROFS")
			return func(ctx context.Context, e *env, args []string) error {
				return exportNFS(ctx, e, *addr, *ro)
			}
		},
	})
}

func exportNFS(ctx context.Context, e *env, addr string, ro bool) error {
	s := nfsexport.New(e.d.Usermount, nfsexport.Options{ReadOnly: ro, Log: slog.New(slog.NewTextHandler(e.stderr, nil))})
	ln, err := s.Listen(addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "serving nfs %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.Close()
		err = <-errc
	}
	s.Close()
	return err
}
