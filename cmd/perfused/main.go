// Command perfused is perfuse's relay daemon. At this stage it runs the
// demo: an embedded in-memory FUSE filesystem served over a socket and read
// back through perfuse's operation table.
package main

import (
	"flag"
	"fmt"
	"os"
)

const usage = `usage: perfused -demo

  -demo   serve an embedded in-memory FUSE filesystem from a go-fuse daemon
          over a SEQPACKET socketpair, walk and read every file through
          perfuse's operation table, compare each byte with the source, and
          print the FUSE trace statistics. Needs no mount and no privileges.
`

func main() {
	fl := flag.NewFlagSet("perfused", flag.ContinueOnError)
	fl.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	demo := fl.Bool("demo", false, "run the demo")
	if err := fl.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if !*demo {
		fl.Usage()
		os.Exit(2)
	}
	if err := runDemo(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "perfused: demo:", err)
		os.Exit(1)
	}
}
