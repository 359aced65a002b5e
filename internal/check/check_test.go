package check

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

// The battery against in-process go-fuse servers: a sound loopback
// passes, a broken one fails the cases that see its fault, and a
// read-only one is skipped where it must be, not failed.

// small keeps the runs short under the race detector; the full sizes
// run through the binary in cmd/perfuse.
var small = Options{Ops: 1500, Entries: 300}

func loopbackRaw(t *testing.T) fuse.RawFileSystem {
	root, err := gofs.NewLoopbackRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return gofs.NewNodeFS(root, &gofs.Options{})
}

func run(t *testing.T, raw fuse.RawFileSystem, opts fuse.MountOptions) map[string]Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	u, err := perfuse.Attach(ctx, gofusepeer.ServeRawOptions(t, raw, opts), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	results := Run(ctx, u, small)
	var table bytes.Buffer
	WriteTable(&table, results)
	t.Logf("\n%s", table.String())
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Case] = r
	}
	if len(byName) != len(cases)+4 {
		t.Errorf("%d results, want %d", len(byName), len(cases)+4)
	}
	return byName
}

func TestLoopbackWithLocksPasses(t *testing.T) {
	res := run(t, loopbackRaw(t), fuse.MountOptions{EnableLocks: true})
	for name, r := range res {
		if r.Status == Fail {
			t.Errorf("%s failed: %s", name, r.Detail)
		}
	}
	for _, name := range []string{"fsx random ops", "readdir", "readdirplus", "rename", "posix locks", "flock", "xattr", "concurrency", "lookup counts", "cleanup"} {
		if res[name].Status != Pass {
			t.Errorf("%s: %s, want passed: %s", name, res[name].Status, res[name].Detail)
		}
	}
	if d := res["fsx random ops"].Detail; !strings.Contains(d, "1500 ops") {
		t.Errorf("fsx detail %q", d)
	}
}

// corruptReads flips a byte of every READ reply past offset 0.
type corruptReads struct{ fuse.RawFileSystem }

func (c corruptReads) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res, st := c.RawFileSystem.Read(cancel, in, buf)
	if !st.Ok() || in.Offset == 0 {
		return res, st
	}
	b, st := res.Bytes(buf)
	if len(b) > 0 {
		b = append([]byte(nil), b...)
		b[len(b)/2] ^= 0x55
	}
	return fuse.ReadResultData(b), st
}

func TestCorruptReadsFail(t *testing.T) {
	res := run(t, corruptReads{loopbackRaw(t)}, fuse.MountOptions{})
	for _, name := range []string{"fsx random ops", "read/write odd sizes"} {
		if res[name].Status != Fail {
			t.Errorf("%s: %s (%s), want failed", name, res[name].Status, res[name].Detail)
		}
	}
	if p, f, s := Summary(mapValues(res)); f == 0 {
		t.Errorf("summary %d passed, %d failed, %d skipped", p, f, s)
	}
	if res["lookup counts"].Status != Pass {
		t.Errorf("failing cases left lookups held: %s", res["lookup counts"].Detail)
	}
}

// readOnly refuses every change with EROFS, as a read-only mount would.
type readOnly struct{ fuse.RawFileSystem }

func (readOnly) Mkdir(<-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.Status(30) // EROFS
}

func TestReadOnlyIsSkippedNotFailed(t *testing.T) {
	raw := loopbackRaw(t)
	res := run(t, readOnly{raw}, fuse.MountOptions{})
	for name, r := range res {
		if r.Status == Fail {
			t.Errorf("%s failed on a read-only daemon: %s", name, r.Detail)
		}
	}
	for _, name := range []string{"fsx random ops", "rename", "link counts", "posix locks"} {
		if r := res[name]; r.Status != Skip || !strings.HasPrefix(r.Detail, "not supported: read-only") {
			t.Errorf("%s: %s %q, want skipped, not supported", name, r.Status, r.Detail)
		}
	}
}

func TestJSONAndSummary(t *testing.T) {
	results := []Result{{Case: "a", Status: Pass}, {Case: "b", Status: Fail, Detail: "x"}, {Case: "c", Status: Skip}}
	var b bytes.Buffer
	if err := WriteJSON(&b, results, 7); err != nil {
		t.Fatal(err)
	}
	// Nothing but the report, so that the output can be piped to jq.
	var rep Report
	if err := json.Unmarshal(b.Bytes(), &rep); err != nil {
		t.Fatalf("%v in %s", err, b.String())
	}
	if rep.Passed != 1 || rep.Failed != 1 || rep.Skipped != 1 || rep.Seed != 7 || len(rep.Cases) != 3 || rep.Cases[1].Detail != "x" {
		t.Errorf("report %+v", rep)
	}
	if last := SummaryLine(results); last != "check: 1 passed, 1 failed, 1 skipped" {
		t.Errorf("summary line %q", last)
	}
}

func mapValues(m map[string]Result) []Result {
	var out []Result
	for _, r := range m {
		out = append(out, r)
	}
	return out
}
