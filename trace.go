package perfuse

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"
)

// traceMax is how many finished records are kept (PERFUSE_TRACECOUNT_MAX).
const traceMax = 4096

// traceRecord is one exchange as perfuse_trace records it.
type traceRecord struct {
	op         Opcode
	path       string
	extra      string
	err        error
	done       bool
	start, end time.Time
}

// tracer keeps the records of the last exchanges while DiagTrace is on.
type tracer struct {
	mu       sync.Mutex
	records  []*traceRecord // oldest first
	finished int            // records that are done
}

func (t *tracer) begin(u *Usermount, op Opcode, n *Node, m *Message) *traceRecord {
	if Diag(u.diag.Load())&DiagTrace == 0 {
		return nil
	}
	r := &traceRecord{op: op, start: time.Now()}
	if n != nil {
		r.path = n.Name()
	}
	if op == OpLookup {
		r.extra = fmt.Sprintf("path = %q", cString(m.InPayload()))
	}
	t.mu.Lock()
	t.records = append(t.records, r)
	t.mu.Unlock()
	return r
}

func (t *tracer) end(u *Usermount, r *traceRecord, err error) {
	if r == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r.end, r.err, r.done = time.Now(), err, true
	// The oldest finished records go a quarter of traceMax at a time, in
	// place, so that a request does not pay for moving them all.
	if t.finished++; t.finished < traceMax+traceMax/4 {
		return
	}
	n := len(t.records)
	t.records = kept(t.records[:0], t.records)
	clear(t.records[len(t.records):n])
	t.finished = traceMax
}

// kept appends to dst the records to keep: the last traceMax finished
// ones, and every one still in flight however old (a request the daemon
// sits on must not pin every later record). dst may be records[:0].
func kept(dst, records []*traceRecord) []*traceRecord {
	finished := 0
	for _, r := range records {
		if r.done {
			finished++
		}
	}
	drop := max(0, finished-traceMax)
	for _, r := range records {
		if r.done && drop > 0 {
			drop--
			continue
		}
		dst = append(dst, r)
	}
	return dst
}

// snapshot copies the records kept, oldest first.
func (t *tracer) snapshot() []traceRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	var records []traceRecord
	for _, r := range kept(nil, t.records) {
		records = append(records, *r)
	}
	return records
}

// TraceDump writes the trace report in perfuse_trace_dump's format: the
// last operations, statistics by operation, global statistics. Like
// upstream it writes nothing unless DiagTrace is on.
func (u *Usermount) TraceDump(w io.Writer) error {
	if Diag(u.diag.Load())&DiagTrace == 0 {
		return nil
	}
	records := u.trace.snapshot()
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Last %d operations\n", len(records))
	for _, r := range records {
		fmt.Fprintf(bw, "%s %s ", timespec(r.start.Sub(time.Unix(0, 0))), OpName(r.op))
		if r.path != "" {
			fmt.Fprintf(bw, "%q ", r.path)
		}
		fmt.Fprintf(bw, "%s ", r.extra)
		if r.done {
			fmt.Fprintf(bw, "error = %d elapsed = %s ", errnoOf(r.err), timespec(r.end.Sub(r.start)))
		} else {
			fmt.Fprint(bw, "ongoing ")
		}
		fmt.Fprintln(bw)
	}
	fmt.Fprintln(bw, "Statistics by operation")
	fmt.Fprintln(bw, "operation\tcount\tmin\tavg\tmax")
	for _, s := range traceStats(records) {
		fmt.Fprintf(bw, "%s\t%d\t%s\t%s\t%s\n", OpName(s.Op), s.Count, timespec(s.Min), timespec(s.Avg), timespec(s.Max))
	}
	fmt.Fprintln(bw, "Global statistics")
	fmt.Fprintf(bw, "Nodes: %d\n", u.NodeCount())
	fmt.Fprintf(bw, "Exchanges: %d\n", u.xchgCount.Load())
	c := u.Counters()
	for _, name := range slices.Sorted(maps.Keys(c)) {
		if c[name] != 0 {
			fmt.Fprintf(bw, "%s: %d\n", name, c[name])
		}
	}
	return bw.Flush()
}

// Counters returns the session's event counters by name: what the
// transport did beyond plain exchanges (INTERRUPTs sent, requests
// abandoned after their grace, unsolicited frames handled and dropped,
// sends that timed out) and the late replies undone. TraceDump prints the
// ones that are not zero.
func (u *Usermount) Counters() map[string]int64 {
	c := map[string]int64{"Late replies undone": u.orphans.lateUndone()}
	if u.cb.stats != nil {
		s := u.cb.stats()
		c["Interrupts sent"] = s.Interrupts
		c["Requests abandoned"] = s.Abandoned
		c["Unsolicited frames"] = s.Unsolicited
		c["Unsolicited frames dropped"] = s.DroppedUnsolic
		c["Send timeouts"] = s.SendTimeouts
	}
	return c
}

// OpStats is the trace statistics of one opcode.
type OpStats struct {
	Op            Opcode
	Count         int
	Min, Avg, Max time.Duration
}

// TraceStats returns the statistics of the finished exchanges in the
// trace, one row per opcode 0..53 as TraceDump prints them.
func (u *Usermount) TraceStats() []OpStats {
	return traceStats(u.trace.snapshot())
}

func traceStats(records []traceRecord) []OpStats {
	stats := make([]OpStats, maxOpcode+1)
	var sum [maxOpcode + 1]time.Duration
	for i := range stats {
		stats[i].Op = Opcode(i)
	}
	for _, r := range records {
		if !r.done || r.op > maxOpcode {
			continue
		}
		s, d := &stats[r.op], r.end.Sub(r.start)
		if s.Count == 0 || d < s.Min {
			s.Min = d
		}
		s.Max = max(s.Max, d)
		s.Count++
		sum[r.op] += d
	}
	for i := range stats {
		if stats[i].Count > 0 {
			stats[i].Avg = sum[i] / time.Duration(stats[i].Count)
		}
	}
	return stats
}

func timespec(d time.Duration) string {
	return fmt.Sprintf("%d.%09d", d/time.Second, d%time.Second)
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
