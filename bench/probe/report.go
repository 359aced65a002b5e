package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// metrics are the table's rows, in order: the keys bench/run writes.
var metrics = []struct{ key, label, format string }{
	{"fstat_us", "fstat latency, µs", "%.1f"},
	{"create_files_s", "create+stat+unlink, files/s", "%.0f"},
	{"readdir_entries_s", "readdir+lstat of 2000 entries, entries/s", "%.0f"},
	{"read_128k_mbs", "O_DIRECT 128 KiB sequential read, MB/s", "%.0f"},
	{"read_1m_mbs", "O_DIRECT 1 MiB sequential read, MB/s", "%.0f"},
	{"read_8x128k_mbs", "8 parallel O_DIRECT 128 KiB readers, MB/s", "%.0f"},
}

// routes are the table's columns: how the one daemon is mounted.
var routes = []string{"direct", "forwarder", "perfused"}

// Result is one metric of the JSON report.
type Result struct {
	Metric  string               `json:"metric"`
	Label   string               `json:"label"`
	Median  map[string]float64   `json:"median"`  // per route
	Samples map[string][]float64 `json:"samples"` // per route, in round order
	Ratio   float64              `json:"perfused_over_forwarder"`
}

// Report is the JSON report.
type Report struct {
	Date    string   `json:"date"`
	Command string   `json:"command,omitempty"`
	Machine Machine  `json:"machine"`
	Results []Result `json:"results"`
}

// Machine is what the figures were measured on.
type Machine struct {
	NProc  int    `json:"nproc"`
	Kernel string `json:"kernel"`
	CPU    string `json:"cpu"`
}

func report(args []string) error {
	fl := flag.NewFlagSet("report", flag.ContinueOnError)
	jsonOut := fl.String("json", "", "write the JSON report to this file (- for standard output)")
	command := fl.String("command", "", "the command that produced the samples, for the record")
	check := fl.Bool("check", false, "fail unless every route has a positive value for every metric")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("usage: probe report [-json F] [-command C] [-check] SAMPLES")
	}
	samples, err := readSamples(fl.Arg(0))
	if err != nil {
		return err
	}
	r := Report{Date: time.Now().UTC().Format(time.RFC3339), Command: *command, Machine: machine()}
	var missing []string
	for _, m := range metrics {
		res := Result{Metric: m.key, Label: m.label, Median: map[string]float64{}, Samples: map[string][]float64{}}
		for _, rt := range routes {
			s := samples[rt+" "+m.key]
			if len(s) == 0 || slices.Min(s) <= 0 {
				missing = append(missing, rt+" "+m.key)
				continue
			}
			res.Samples[rt], res.Median[rt] = s, median(s)
		}
		if f := res.Median["forwarder"]; f > 0 {
			res.Ratio = res.Median["perfused"] / f
		}
		r.Results = append(r.Results, res)
	}
	printTable(r)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if *jsonOut == "-" {
			_, err = os.Stdout.Write(b)
		} else {
			err = os.WriteFile(*jsonOut, b, 0o644)
		}
		if err != nil {
			return err
		}
	}
	if *check && len(missing) > 0 {
		return fmt.Errorf("no positive figure for %s", strings.Join(missing, ", "))
	}
	return nil
}

// readSamples reads "ROUTE METRIC VALUE" lines into ROUTE+" "+METRIC → values.
func readSamples(path string) (map[string][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]float64{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		w := strings.Fields(sc.Text())
		if len(w) == 0 {
			continue
		}
		if len(w) != 3 {
			return nil, fmt.Errorf("%s:%d: want ROUTE METRIC VALUE, got %q", path, line, sc.Text())
		}
		v, err := strconv.ParseFloat(w[2], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%s:%d: bad value %q", path, line, w[2])
		}
		out[w[0]+" "+w[1]] = append(out[w[0]+" "+w[1]], v)
	}
	return out, sc.Err()
}

func median(s []float64) float64 {
	s = slices.Sorted(slices.Values(s))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func printTable(r Report) {
	m := r.Machine
	fmt.Printf("%s, %d CPUs (%s), Linux %s\n", r.Date, m.NProc, m.CPU, m.Kernel)
	if r.Command != "" {
		fmt.Printf("command: %s\n", r.Command)
	}
	fmt.Println()
	fmt.Println("| metric | direct mount | forwarder | perfused | perfused / forwarder |")
	fmt.Println("|---|---|---|---|---|")
	for i, res := range r.Results {
		row := []string{res.Label}
		for _, rt := range routes {
			v, ok := res.Median[rt]
			if !ok {
				row = append(row, "—")
				continue
			}
			row = append(row, fmt.Sprintf(metrics[i].format, v))
		}
		if res.Ratio > 0 {
			row = append(row, fmt.Sprintf("%.2f×", res.Ratio))
		} else {
			row = append(row, "—")
		}
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
}

// machine describes this machine: CPUs, kernel release and CPU model.
func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), CPU: "unknown"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// fioBandwidth returns the read bandwidth of a fio run (JSON output, jobs
// grouped or not), in MB/s.
func fioBandwidth(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// fio may print notes before its JSON.
	if i := strings.IndexByte(string(b), '{'); i > 0 {
		b = b[i:]
	}
	var out struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				BwBytes float64 `json:"bw_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	var bw float64
	for _, j := range out.Jobs {
		if j.Error != 0 {
			return 0, fmt.Errorf("%s: fio job error %d", path, j.Error)
		}
		bw += j.Read.BwBytes
	}
	if bw <= 0 {
		return 0, fmt.Errorf("%s: fio read nothing", path)
	}
	return bw / 1e6, nil
}
