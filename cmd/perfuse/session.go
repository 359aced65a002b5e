package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/perfuse-go/perfuse"
)

// env is what a command runs with: the started daemon and the streams.
type env struct {
	g              globals
	stdin          io.Reader
	stdout, stderr io.Writer
	argv           []string // the daemon's command line
	d              *perfuse.Daemon
	// endIsNote makes the daemon's failure to end cleanly a note on
	// stderr, not an error: check has reported on the daemon already.
	endIsNote bool
}

// startTimeout bounds the daemon's start and INIT.
const startTimeout = 30 * time.Second

// run starts the daemon, runs f on it, and ends the daemon. SIGINT and
// SIGTERM cancel f's context, which interrupts the request in flight.
func (e *env) run(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := []perfuse.Option{}
	if e.g.timeout > 0 {
		opts = append(opts, perfuse.WithRequestTimeout(e.g.timeout))
	}
	if e.g.trace {
		opts = append(opts, perfuse.WithDiag(perfuse.DiagTrace))
	}
	if e.g.verbose {
		opts = append(opts, perfuse.WithDiag(perfuse.DiagFuse),
			perfuse.WithLogger(slog.New(slog.NewTextHandler(e.stderr, nil))))
	}
	cmd := exec.Command(e.argv[0], e.argv[1:]...)
	if e.g.verbose {
		cmd.Stderr = e.stderr
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	d, err := perfuse.Start(sctx, cmd, opts...)
	cancel()
	if err != nil {
		return err
	}
	e.d = d
	// With no kernel there are no caches for a notification to act on.
	d.SetNotifyHandler(func(*perfuse.Notification) {})
	err = f(ctx)
	if e.g.trace {
		e.printTrace()
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
	defer cancel()
	if uerr := d.Unmount(uctx); uerr != nil && e.endIsNote {
		fmt.Fprintf(e.stderr, "perfuse: note: ending %s: %v\n", e.argv[0], uerr)
	} else if uerr != nil && err == nil {
		err = fmt.Errorf("ending %s: %w", e.argv[0], uerr)
	}
	return err
}

// printTrace writes the trace statistics of the operations used, and the
// session's counters that are not zero, to stderr.
func (e *env) printTrace() {
	w := tabwriter.NewWriter(e.stderr, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "operation\tcount\tmin\tavg\tmax")
	for _, s := range e.d.TraceStats() {
		if s.Count > 0 {
			fmt.Fprintf(w, "%s\t%d\t%v\t%v\t%v\n", perfuse.OpName(s.Op), s.Count, s.Min, s.Avg, s.Max)
		}
	}
	w.Flush()
	for name, v := range e.d.Counters() {
		if v != 0 {
			fmt.Fprintf(e.stderr, "%s: %d\n", name, v)
		}
	}
}

// isNotSupported reports an errno meaning the daemon cannot do this at all.
func isNotSupported(err error) bool {
	return errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EOPNOTSUPP)
}
