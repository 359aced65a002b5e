package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path"
)

func init() {
	register(&command{
		name:     "tree",
		args:     "[PATH]",
		summary:  "draw the tree under a directory (default /), as tree(1) does",
		help:     `Symbolic links are shown with their targets and not followed.`,
		validate: nargs(0, 1, "at most one PATH"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				p := "/"
				if len(args) == 1 {
					p = args[0]
				}
				t := &treeWalk{w: e.stdout, fsys: e.fsys(ctx)}
				name := fsName(p)
				fmt.Fprintln(e.stdout, slash(name))
				if err := t.dir(name, ""); err != nil {
					return inDaemon(err)
				}
				fmt.Fprintf(e.stdout, "\n%d directories, %d files\n", t.dirs, t.files)
				return nil
			}
		},
	})
}

type treeWalk struct {
	w           io.Writer
	fsys        fs.FS
	dirs, files int
}

func (t *treeWalk) dir(name, indent string) error {
	ents, err := fs.ReadDir(t.fsys, name)
	if err != nil {
		return err
	}
	for i, ent := range ents {
		branch, more := "├── ", "│   "
		if i == len(ents)-1 {
			branch, more = "└── ", "    "
		}
		p := path.Join(name, ent.Name())
		label := ent.Name()
		if ent.Type()&fs.ModeSymlink != 0 {
			if target, err := fs.ReadLink(t.fsys, p); err == nil {
				label += " -> " + target
			}
		}
		fmt.Fprintf(t.w, "%s%s%s\n", indent, branch, label)
		if ent.IsDir() {
			t.dirs++
			if err := t.dir(p, indent+more); err != nil {
				return err
			}
		} else {
			t.files++
		}
	}
	return nil
}
