package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/perfuse-go/perfuse/internal/check"
)

func init() {
	register(&command{
		name:    "check",
		args:    "[--json] [-seed N]",
		summary: "run a FUSE protocol conformance battery against the daemon",
		help: `The daemon is driven through perfuse's operation table, with no mount,
and each case is checked against POSIX and the FUSE protocol's rules: INIT,
LOOKUP of . and .. and nodeid stability, reads, writes and truncates at odd
sizes and offsets, a seeded random sequence of 10,000 operations against a
model, rename (and RENAME2's flags), link counts, symlinks, a FIFO, readdir
and readdirplus of 5,000 entries resumed from each offset, xattrs with
ERANGE sizing, POSIX locks and flock between two owners, statfs, every
reply's errno and size, 16 goroutines on files of their own, INTERRUPT of a
blocked request, and lookup counts given back at the end.

Writing cases work in a scratch directory, .perfuse-check.PID, in the
daemon's root, removed at the end. A read-only daemon, or one answering
ENOSYS, has the cases needing it "skipped, not supported"; read-only
variants read the daemon's own tree. The output is a table of case, result
and detail, then a line "check: N passed, M failed, K skipped" (--json: the
results as one JSON object on standard output, and that line on standard
error). Exit status 1 if any case failed.`,
		validate: nargs(0, 0, "no arguments"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			asJSON := fl.Bool("json", false, "write the results as JSON")
			seed := fl.Uint64("seed", check.DefaultSeed, "seed of the random operation sequence")
			return func(ctx context.Context, e *env, args []string) error {
				e.endIsNote = true
				results := check.Run(ctx, e.d.Usermount, check.Options{Seed: *seed})
				var err error
				if *asJSON {
					// The summary beside, so that standard output is JSON.
					if err = check.WriteJSON(e.stdout, results, *seed); err == nil {
						fmt.Fprintln(e.stderr, check.SummaryLine(results))
					}
				} else {
					err = check.WriteTable(e.stdout, results)
				}
				if err != nil {
					return err
				}
				if _, failed, _ := check.Summary(results); failed > 0 {
					return errCheckFailed{failed}
				}
				return nil
			}
		},
	})
}

// errCheckFailed is exit status 1 with nothing more to say: the table
// said it.
type errCheckFailed struct{ n int }

func (e errCheckFailed) Error() string { return fmt.Sprintf("%d cases failed", e.n) }
