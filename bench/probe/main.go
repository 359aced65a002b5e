// Command probe is bench/run's measuring and reporting half: the metadata
// loops, reading fio's JSON, and the table of medians.
//
//	probe fstat FILE DURATION     mean fstat(2) latency on an open FILE, µs
//	probe create DIR DURATION     create, stat and unlink in DIR, files/s
//	probe readdir DIR DURATION    list DIR and lstat every entry, entries/s
//	probe fio JSONFILE            a fio run's read bandwidth, MB/s (10^6 B/s)
//	probe report [-json F] [-command C] [-check] SAMPLES
//
// SAMPLES holds lines "ROUTE METRIC VALUE", one per measurement; report
// prints the medians as a Markdown table, with the machine and the date,
// and writes them as JSON to F (- for standard output). -check fails unless
// every route has a positive value for every metric.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: probe fstat|create|readdir|fio|report ...")
	}
	var v float64
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "fstat", "create", "readdir":
		if len(rest) != 2 {
			return fmt.Errorf("usage: probe %s PATH DURATION", cmd)
		}
		var d time.Duration
		if d, err = time.ParseDuration(rest[1]); err != nil {
			return err
		}
		v, err = map[string]func(string, time.Duration) (float64, error){
			"fstat": fstatLatency, "create": createRate, "readdir": readdirRate,
		}[cmd](rest[0], d)
	case "fio":
		if len(rest) != 1 {
			return fmt.Errorf("usage: probe fio JSONFILE")
		}
		v, err = fioBandwidth(rest[0])
	case "report":
		return report(rest)
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		return err
	}
	fmt.Printf("%.6g\n", v)
	return nil
}
