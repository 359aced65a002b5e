// Package check is a protocol conformance battery for FUSE daemons, run
// mount-free through perfuse's operation table (the `perfuse check`
// command). Each case drives the daemon and checks its answers against
// POSIX semantics and the FUSE protocol's rules. A daemon that is
// read-only, or answers ENOSYS for an operation, has the cases that need
// it skipped as not supported, not failed.
package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// Status is a case's result.
type Status string

// The results a case can have.
const (
	Pass Status = "passed"
	Fail Status = "FAILED"
	Skip Status = "skipped"
)

// Result is one case's outcome.
type Result struct {
	Case    string        `json:"case"`
	Status  Status        `json:"result"`
	Detail  string        `json:"detail"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Options tune a run. The zero value runs the full battery.
type Options struct {
	// Seed seeds the random operation sequence (0: a fixed default, so
	// runs repeat).
	Seed uint64
	// Ops is the length of the random sequence (0: 10,000).
	Ops int
	// Entries is the size of the directory read back (0: 5,000).
	Entries int
	// Progress, if set, gets each result as it is known.
	Progress func(Result)
}

// DefaultSeed is the random sequence's seed when Options.Seed is 0.
const DefaultSeed = 20240611

// Run runs every case against the session u, which must be fresh (no
// lookups held but the root). Writing cases work in a scratch directory
// made in the daemon's root and removed at the end.
func Run(ctx context.Context, u *perfuse.Usermount, opt Options) []Result {
	if opt.Seed == 0 {
		opt.Seed = DefaultSeed
	}
	if opt.Ops == 0 {
		opt.Ops = 10000
	}
	if opt.Entries == 0 {
		opt.Entries = 5000
	}
	r := &runner{u: u, ctx: ctx, opt: opt}
	r.setup()
	var results []Result
	record := func(name string, f func(*runner) outcome) {
		start := time.Now()
		o := f(r)
		res := Result{Case: name, Status: o.status, Detail: o.detail, Elapsed: time.Since(start)}
		results = append(results, res)
		if opt.Progress != nil {
			opt.Progress(res)
		}
	}
	for _, c := range cases {
		record(c.name, c.run)
	}
	record("cleanup", (*runner).cleanup)
	record("lookup . and ..", (*runner).dotsCase)
	record("replies", (*runner).replies)
	record("lookup counts", (*runner).balanced)
	return results
}

type outcome struct {
	status Status
	detail string
}

func pass(format string, args ...any) outcome { return outcome{Pass, fmt.Sprintf(format, args...)} }
func fail(format string, args ...any) outcome { return outcome{Fail, fmt.Sprintf(format, args...)} }
func skip(format string, args ...any) outcome {
	return outcome{Skip, "not supported: " + fmt.Sprintf(format, args...)}
}

// cases run in this order: each leaves the scratch directory empty.
var cases = []struct {
	name string
	run  func(*runner) outcome
}{
	{"init", (*runner).initCase},
	{"lookup", (*runner).lookupCase},
	{"statfs", (*runner).statfsCase},
	{"read/write odd sizes", (*runner).oddIO},
	{"fsx random ops", (*runner).fsx},
	{"rename", (*runner).renameCase},
	{"rename2 flags", (*runner).rename2Case},
	{"link counts", (*runner).linkCase},
	{"symlink", (*runner).symlinkCase},
	{"mknod fifo", (*runner).fifoCase},
	{"readdir", func(r *runner) outcome { return r.readdirCase(false) }},
	{"readdirplus", func(r *runner) outcome { return r.readdirCase(true) }},
	{"xattr", (*runner).xattrCase},
	{"posix locks", (*runner).posixLocks},
	{"flock", (*runner).flockCase},
	{"concurrency", (*runner).concurrency},
	{"interrupt", (*runner).interrupt},
}

// Summary counts the results.
func Summary(results []Result) (passed, failed, skipped int) {
	for _, r := range results {
		switch r.Status {
		case Pass:
			passed++
		case Fail:
			failed++
		default:
			skipped++
		}
	}
	return
}

// SummaryLine is the run's last line: "check: N passed, M failed, K skipped".
func SummaryLine(results []Result) string {
	p, f, s := Summary(results)
	return fmt.Sprintf("check: %d passed, %d failed, %d skipped", p, f, s)
}

// WriteTable writes the results as a table of case, result and detail,
// then the summary line.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tRESULT\tTIME\tDETAIL")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.Case, r.Status, r.Elapsed.Round(time.Millisecond), r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, SummaryLine(results))
	return err
}

// Report is the JSON form of a run.
type Report struct {
	Cases   []Result `json:"cases"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Skipped int      `json:"skipped"`
	Seed    uint64   `json:"seed"`
}

// WriteJSON writes the results as a Report, then the summary line.
func WriteJSON(w io.Writer, results []Result, seed uint64) error {
	rep := Report{Cases: results, Seed: seed}
	rep.Passed, rep.Failed, rep.Skipped = Summary(results)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// runner is one run's state.
type runner struct {
	u   *perfuse.Usermount
	ctx context.Context
	opt Options
	// scratch is the directory the writing cases work in; nil when the
	// daemon is read-only, with why in ro.
	scratch    *perfuse.Node
	scratchErr error
	name       string
	ro         string
	protoErrs  []string
	held       []*perfuse.Node // see lookupHeld
	// big is the large directory the readdir cases share, and its names.
	big      *perfuse.Node
	bigNames map[string]bool
	noMknod  bool
}

// unsupported are the errnos meaning "this daemon does not do that".
func unsupported(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENOSYS, syscall.EROFS, syscall.EOPNOTSUPP, syscall.ENOTSUP, syscall.EPERM, syscall.EACCES} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errName is err's errno name, or its text.
func errName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
	}
	return err.Error()
}

// seen records an error a case tolerates, so a malformed reply among
// them still counts against the "replies" case.
func (r *runner) seen(what string, err error) {
	if errors.Is(err, syscall.EPROTO) {
		r.protoErrs = append(r.protoErrs, fmt.Sprintf("%s: %v", what, err))
	}
}

func (r *runner) setup() {
	r.name = fmt.Sprintf(".perfuse-check.%d", os.Getpid())
	e, err := r.u.NodeMkdir(r.ctx, nil, r.u.Root(), r.name, 0o755, 0o022)
	switch {
	case err == nil:
		r.scratch = e.Node
	case unsupported(err):
		r.ro = "read-only (MKDIR in the root: " + errName(err) + ")"
	default:
		r.scratchErr = err
		r.ro = fmt.Sprintf("no scratch directory (MKDIR: %v)", err)
	}
}

// needWrite is the skip (or failure) for a writing case on a daemon with
// no scratch directory, or nil.
func (r *runner) needWrite() *outcome {
	if r.scratch != nil {
		return nil
	}
	o := skip("%s", r.ro)
	if r.scratchErr != nil {
		o = fail("%s", r.ro)
	}
	return &o
}

// cleanup removes the scratch directory.
func (r *runner) cleanup() outcome {
	if r.scratch == nil {
		return outcome{Skip, "no scratch directory made: " + r.ro}
	}
	if r.big != nil {
		r.u.NodeReclaim(r.ctx, r.big, 1)
	}
	err := r.removeAll(r.u.Root(), r.name)
	r.u.NodeReclaim(r.ctx, r.scratch, 1)
	r.scratch = nil
	if err != nil {
		return fail("removing the scratch directory: %v", err)
	}
	return pass("scratch directory /%s removed", r.name)
}

// replies reports the malformed replies any case saw (the op table checks
// every reply's status and size, and fails the call with EPROTO).
func (r *runner) replies() outcome {
	c := r.u.Counters()
	if len(r.protoErrs) > 0 {
		return fail("%d malformed replies: %s", len(r.protoErrs), strings.Join(r.protoErrs[:min(3, len(r.protoErrs))], "; "))
	}
	if n := c["Unsolicited frames dropped"]; n > 0 {
		return fail("%d replies to no request (unknown unique)", n)
	}
	return pass("every reply had a status of 0 or -1..-511 and the size of its opcode's reply")
}

// balanced checks that every lookup the run was given was given back.
func (r *runner) balanced() outcome {
	if n := r.u.NodeCount(); n != 1 {
		return fail("%d nodes still held after the run, want only the root", n)
	}
	if n := r.u.OpenHandles(); n != 0 {
		return fail("%d handles still open after the run", n)
	}
	return pass("every entry forgotten, every handle released")
}
