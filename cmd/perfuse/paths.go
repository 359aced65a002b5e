package main

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/perfuse-go/perfuse"
)

// fsName turns a daemon path ("/a/b", "a/b", ":/a/b"; "/" or "" for the
// root) into an io/fs name ("a/b", "." for the root).
func fsName(p string) string {
	p = strings.TrimPrefix(p, ":")
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// fsys is the daemon's tree as an io/fs view.
func (e *env) fsys(ctx context.Context) fs.FS { return e.d.FS(ctx, nil) }

// node is a node reached by lookup, holding one lookup unless it is the
// root; release gives it back.
type node struct {
	n    *perfuse.Node
	attr perfuse.Attr
	e    *env
}

func (n *node) release(ctx context.Context) {
	if n.n != n.e.d.Root() {
		n.e.d.NodeReclaim(ctx, n.n, 1)
	}
}

// lookup looks the io/fs name up component by component, without following
// symbolic links (the writing commands act on names, as rename(2) and
// unlink(2) do).
func (e *env) lookup(ctx context.Context, name string) (*node, error) {
	cur := &node{n: e.d.Root(), e: e}
	if name == "." {
		out, err := e.d.NodeGetattr(ctx, nil, cur.n, nil)
		if err != nil {
			return nil, &fs.PathError{Op: "stat", Path: "/", Err: err}
		}
		cur.attr = out.Attr
		return cur, nil
	}
	parts := strings.Split(name, "/")
	for i, part := range parts {
		if i > 0 && cur.attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			cur.release(ctx)
			return nil, &fs.PathError{Op: "lookup", Path: "/" + strings.Join(parts[:i], "/"), Err: syscall.ENOTDIR}
		}
		ent, err := e.d.NodeLookup(ctx, nil, cur.n, part)
		cur.release(ctx)
		if err != nil {
			return nil, &fs.PathError{Op: "lookup", Path: "/" + strings.Join(parts[:i+1], "/"), Err: err}
		}
		cur = &node{n: ent.Node, attr: ent.Attr, e: e}
	}
	return cur, nil
}

// parent looks up the directory of the io/fs name, and returns it with the
// last component.
func (e *env) parent(ctx context.Context, name string) (*node, string, error) {
	if name == "." {
		return nil, "", &fs.PathError{Op: "lookup", Path: "/", Err: syscall.EINVAL}
	}
	dir, base := path.Split(name)
	if dir = strings.TrimSuffix(dir, "/"); dir == "" {
		dir = "."
	}
	n, err := e.lookup(ctx, dir)
	if err != nil {
		return nil, "", err
	}
	if n.attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		n.release(ctx)
		return nil, "", &fs.PathError{Op: "lookup", Path: "/" + dir, Err: syscall.ENOTDIR}
	}
	return n, base, nil
}

// slash is an io/fs name as the daemon path the user sees.
func slash(name string) string {
	if name == "." {
		return "/"
	}
	return "/" + name
}

// oneArg returns the only argument, or a usage error naming what it is.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", usagef("want one %s, got %d arguments", what, len(args))
	}
	return args[0], nil
}

// inDaemon names the path of an error of the io/fs view as the user gave
// it, from the daemon's root ("open /nope", not "open nope").
func inDaemon(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && !strings.HasPrefix(pe.Path, "/") {
		pe.Path = slash(pe.Path)
	}
	return err
}

func errorf(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: slash(name), Err: err}
}
