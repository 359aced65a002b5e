package perfuse

import (
	"bytes"
	"context"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestBufVarFromEnv(t *testing.T) {
	for value, want := range map[string]uint32{
		"4096": 4096, "0x1000": 4096, "0x1b0000": 0x1b0000, "0XB": 11, "010000": 4096, "0": 0, "4294967295": 1<<32 - 1,
		"": 77, "12abc": 77, "-1": 77, "4294967296": 77, "0o17": 77, "1_000": 77, " 12": 77, "0b11": 77,
	} {
		t.Setenv("PERFUSE_TEST_BUF", value)
		if got := BufVarFromEnv("PERFUSE_TEST_BUF", 77); got != want {
			t.Errorf("%q: %d, want %d", value, got, want)
		}
	}
	if got := BufVarFromEnv("PERFUSE_TEST_UNSET_VARIABLE", 5); got != 5 {
		t.Errorf("unset: %d", got)
	}
}

func TestPerfuseOptions(t *testing.T) {
	for value, want := range map[string][2]bool{ // noAccess, noCreat
		"":                             {true, false},
		"enable_access":                {false, false},
		"enable_access,disable_access": {true, false},
		"disable_access,enable_access": {false, false},
		"disable_creat,bogus,,x=y":     {true, true},
		"disable_creat,enable_creat":   {true, false},
	} {
		t.Setenv("PERFUSE_OPTIONS", value)
		c := newConfig(nil)
		if c.noAccess != want[0] || c.noCreat != want[1] {
			t.Errorf("%q: noAccess %v noCreat %v, want %v", value, c.noAccess, c.noCreat, want)
		}
	}
	// Go options apply after the variable.
	t.Setenv("PERFUSE_OPTIONS", "disable_creat")
	if c := newConfig([]Option{WithCreat(true), WithAccess(true)}); c.noCreat || c.noAccess {
		t.Errorf("options did not override: %+v", c)
	}
}

func TestParseDiag(t *testing.T) {
	d, unknown := ParseDiag("fuse, dump,trace,reize,resize,nonsense")
	if d != DiagFuse|DiagDump|DiagTrace|DiagResize || strings.Join(unknown, ",") != "reize,nonsense" {
		t.Errorf("got %v (%s) unknown %v", d, d, unknown)
	}
	if d.String() != "fuse,dump,resize,trace" {
		t.Errorf("String %q", d.String())
	}
}

// memCallbacks is a transport with no socket: XchgMsg answers from Go.
// It shows the callbacks are the only thing between the op table and the
// daemon.
func memCallbacks(t *testing.T, answer func(m *Message) []byte) (*Callbacks, *[]string) {
	var calls []string
	cb := &Callbacks{
		XchgMsg: func(ctx context.Context, u *Usermount, m *Message, wait Wait) error {
			calls = append(calls, "xchg "+m.Opcode().String())
			if wait == WaitReply {
				m.SetReply(answer(m))
			}
			return nil
		},
		DestroyMsg: func(m *Message) { calls = append(calls, "destroy") },
		Umount:     func(u *Usermount) { calls = append(calls, "umount") },
	}
	return cb, &calls
}

func replyTo(m *Message, status int32, payload []byte) []byte {
	h := fuse.OutHeader{Length: uint32(outHeaderSize + len(payload)), Status: status, Unique: m.InHeader().Unique}
	return append(append([]byte(nil), structBytes(&h)...), payload...)
}

func TestPluggableCallbacks(t *testing.T) {
	cb, calls := memCallbacks(t, func(m *Message) []byte {
		switch m.Opcode() {
		case OpInit:
			out := fuse.InitOut{Major: 7, Minor: 28, MaxWrite: 65536}
			return replyTo(m, 0, structBytes(&out))
		case OpGetattr:
			out := attrOut(1, syscall.S_IFDIR|0o755, 42)
			return replyTo(m, 0, structBytes(&out))
		}
		return replyTo(m, -int32(syscall.ENOSYS), nil)
	})
	before := *cb
	u, err := Init(cb, &MountInfo{Target: "/x"}, WithDiag(DiagTrace))
	if err != nil {
		t.Fatal(err)
	}
	if (cb.NewMsg == nil) != (before.NewMsg == nil) || (cb.DestroyMsg == nil) != (before.DestroyMsg == nil) ||
		(cb.Start == nil) != (before.Start == nil) || cb.MaxFrame != before.MaxFrame {
		t.Fatal("Init wrote into the caller's Callbacks")
	}
	u.SetSpecific(17)
	if u.Specific() != 17 {
		t.Errorf("Specific %v", u.Specific())
	}
	if a, b := u.NextUnique(), u.NextUnique(); a != 2 || b != 4 {
		t.Errorf("uniques %d %d, want 2 4", a, b)
	}
	if u.NodeID(nil) != 0 || u.NodeID(u.Root()) != RootID {
		t.Error("NodeID")
	}
	ctx := context.Background()
	if err := u.FsInit(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := u.NodeGetattr(ctx, nil, u.Root(), nil)
	if err != nil || a.Size != 42 {
		t.Fatalf("getattr %+v %v", a, err)
	}
	if err := u.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	want := "xchg INIT,destroy,xchg GETATTR,destroy,xchg DESTROY,destroy,umount"
	if got := strings.Join(*calls, ","); got != want {
		t.Errorf("calls %s\nwant  %s", got, want)
	}
	if err := u.Mainloop(); err != nil {
		t.Errorf("Mainloop after Unmount: %v", err)
	}

	var out bytes.Buffer
	if err := u.TraceDump(&out); err != nil {
		t.Fatal(err)
	}
	dump := out.String()
	for _, re := range []string{
		`(?m)^Last 3 operations$`,
		`(?m)^\d+\.\d{9} INIT  error = 0 elapsed = 0\.\d{9} $`,
		`(?m)^\d+\.\d{9} DESTROY  error = 38 elapsed = 0\.\d{9} $`,
		`(?m)^Statistics by operation\noperation\tcount\tmin\tavg\tmax$`,
		`(?m)^GETATTR\t1\t0\.\d{9}\t0\.\d{9}\t0\.\d{9}$`,
		`(?m)^LOOKUP\t0\t0\.000000000\t0\.000000000\t0\.000000000$`,
		`(?m)^Global statistics\nNodes: 1\nExchanges: 3$`,
	} {
		if !regexp.MustCompile(re).MatchString(dump) {
			t.Errorf("trace dump lacks %s:\n%s", re, dump)
		}
	}
	// Without the trace class, nothing is written.
	u.SetDiag(0)
	out.Reset()
	u.TraceDump(&out)
	if out.Len() != 0 {
		t.Errorf("dump without tracing: %q", out.String())
	}
}

func TestInitNeedsXchg(t *testing.T) {
	if _, err := Init(&Callbacks{}, nil); err == nil {
		t.Fatal("Init without XchgMsg succeeded")
	}
	if _, err := Init(nil, nil); err == nil {
		t.Fatal("Init with nil callbacks succeeded")
	}
}

// A request the daemon never answers does not make the trace keep every
// record after it: it stays, in flight, beside the last 4096 finished.
func TestTraceIsBoundedBehindAHungRequest(t *testing.T) {
	hung := make(chan struct{})
	defer close(hung)
	cb := &Callbacks{XchgMsg: func(ctx context.Context, u *Usermount, m *Message, wait Wait) error {
		if m.Opcode() == OpStatfs {
			<-hung
			return syscall.ENOTCONN
		}
		out := attrOut(1, syscall.S_IFDIR|0o755, 1)
		m.SetReply(replyTo(m, 0, structBytes(&out)))
		return nil
	}}
	u, err := Init(cb, nil, WithDiag(DiagTrace))
	if err != nil {
		t.Fatal(err)
	}
	go u.FsStatvfs(context.Background(), nil)
	for !slices.ContainsFunc(u.trace.snapshot(), func(r traceRecord) bool { return r.op == OpStatfs }) {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 3*traceMax; i++ {
		if _, err := u.NodeGetattr(context.Background(), nil, u.Root(), nil); err != nil {
			t.Fatal(err)
		}
	}
	u.trace.mu.Lock()
	n := len(u.trace.records)
	u.trace.mu.Unlock()
	if n > traceMax+traceMax/4+1 {
		t.Errorf("%d records held behind one in flight, want at most %d", n, traceMax+traceMax/4+1)
	}
	recs := u.trace.snapshot()
	if len(recs) != traceMax+1 || recs[0].op != OpStatfs || recs[0].done {
		t.Errorf("dump of %d records, first %v (done %v); want the STATFS in flight and %d GETATTRs", len(recs), recs[0].op, recs[0].done, traceMax)
	}
}

// The trace keeps the last 4096 finished exchanges.
func TestTraceKeepsLast4096(t *testing.T) {
	cb, _ := memCallbacks(t, func(m *Message) []byte {
		out := attrOut(1, syscall.S_IFDIR|0o755, 1)
		return replyTo(m, 0, structBytes(&out))
	})
	u, err := Init(cb, nil, WithDiag(DiagTrace))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < traceMax+500; i++ {
		if _, err := u.NodeGetattr(context.Background(), nil, u.Root(), nil); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	u.TraceDump(&out)
	if !strings.HasPrefix(out.String(), "Last 4096 operations\n") {
		t.Errorf("dump starts %q", out.String()[:40])
	}
	if s := u.TraceStats()[OpGetattr]; s.Count != traceMax {
		t.Errorf("%d GETATTR records kept, want %d", s.Count, traceMax)
	}
	// A full trace costs a request its record, not a copy of the trace
	// (4096 pointers, 32 KiB).
	const more = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < more; i++ {
		u.NodeGetattr(context.Background(), nil, u.Root(), nil)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / more; per > 4096 {
		t.Errorf("%d bytes allocated per traced request once the trace is full", per)
	}
}
