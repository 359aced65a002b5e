// Package bench holds the smoke test of bench/run, the relay benchmarks
// described in BENCHMARKS.md; the programs it builds are in its
// subdirectories.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

// TestRunSmoke runs "bench/run --smoke": every route mounts, every metric
// gives a positive figure, the ratio is perfused over forwarder, the table
// has every row, and nothing stays mounted or behind.
func TestRunSmoke(t *testing.T) {
	kerneltest.NeedMount(t)
	daemonpeer.Need(t, "fio")
	tmp := t.TempDir()
	out := filepath.Join(t.TempDir(), "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run", "--smoke", "--json", out)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// SIGTERM lets the script unmount what it mounted.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench/run --smoke: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}

	var rep struct {
		Command string
		Machine struct {
			NProc  int
			Kernel string
		}
		Results []struct {
			Metric string
			Label  string
			Median map[string]float64
			Ratio  float64 `json:"perfused_over_forwarder"`
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, b)
	}
	if rep.Command != "bench/run --smoke --json "+out || rep.Machine.NProc < 1 || rep.Machine.Kernel == "" {
		t.Errorf("report header: command %q, machine %+v", rep.Command, rep.Machine)
	}
	want := []string{"fstat_us", "create_files_s", "readdir_entries_s", "read_128k_mbs", "read_1m_mbs", "read_8x128k_mbs"}
	if len(rep.Results) != len(want) {
		t.Fatalf("report has %d metrics, want %d:\n%s", len(rep.Results), len(want), b)
	}
	for i, r := range rep.Results {
		if r.Metric != want[i] {
			t.Errorf("metric %d is %q, want %q", i, r.Metric, want[i])
		}
		for _, route := range []string{"direct", "forwarder", "perfused"} {
			if v := r.Median[route]; !(v > 0) || math.IsInf(v, 0) {
				t.Errorf("%s %s: %v, want a positive figure", route, r.Metric, v)
			}
		}
		if p, f := r.Median["perfused"], r.Median["forwarder"]; f > 0 && math.Abs(r.Ratio-p/f) > 1e-9 {
			t.Errorf("%s: ratio %v, want perfused/forwarder %v", r.Metric, r.Ratio, p/f)
		}
		if !strings.Contains(stdout.String(), "| "+r.Label+" | ") {
			t.Errorf("table lacks the row %q:\n%s", r.Label, &stdout)
		}
	}

	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), tmp) {
		t.Errorf("still mounted under %s after the run:\n%s", tmp, mounts)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left behind in %s: %v", tmp, left)
	}
}

// TestRunGo runs "bench/run --go" once per benchmark (BENCHTIME=1x): every
// benchmark of both packages is reported with its allocations, on whole
// lines, with none of the test daemons' log lines in between.
func TestRunGo(t *testing.T) {
	kerneltest.NeedMount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	list, err := exec.CommandContext(ctx, "go", "test", "-list", "^Benchmark", "..", "../internal/kernel").CombinedOutput()
	if err != nil {
		t.Fatalf("go test -list: %v\n%s", err, list)
	}
	var names []string
	for _, l := range strings.Fields(string(list)) {
		if strings.HasPrefix(l, "Benchmark") {
			names = append(names, l)
		}
	}
	if len(names) == 0 {
		t.Fatalf("go test -list found no benchmarks:\n%s", list)
	}
	cmd := exec.CommandContext(ctx, "bash", "run", "--go")
	cmd.Env = append(os.Environ(), "BENCHTIME=1x")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench/run --go: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for _, name := range names {
		found := false
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 0 && (strings.HasPrefix(f[0], name+"-") || strings.HasPrefix(f[0], name+"/")) {
				found = true
				if !strings.Contains(l, " ns/op") || !strings.Contains(l, " allocs/op") {
					t.Errorf("%s: broken line %q", name, l)
				}
			}
		}
		if !found {
			t.Errorf("%s not reported:\n%s", name, out)
		}
	}
	logLine := regexp.MustCompile(`\d{4}/\d\d/\d\d \d\d:\d\d:\d\d|--- BENCH|gofusepeer\.go`)
	for _, l := range lines {
		if logLine.MatchString(l) {
			t.Errorf("log line left in the report: %q", l)
		}
	}
}
