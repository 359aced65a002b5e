package main

import (
	"context"
	"flag"
	"io"
	"io/fs"
)

func init() {
	register(&command{
		name:     "cat",
		args:     "PATH...",
		summary:  "write the contents of each file to stdout",
		help:     `Symbolic links are followed.`,
		validate: nargs(1, -1, "at least one PATH"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				fsys := e.fsys(ctx)
				for _, p := range args {
					if err := catFile(e.stdout, fsys, fsName(p)); err != nil {
						return inDaemon(err)
					}
				}
				return nil
			}
		},
	})
}

// catFile copies the daemon's file name to w.
func catFile(w io.Writer, fsys fs.FS, name string) error {
	f, err := fsys.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
