package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"syscall"
	"time"
)

func init() {
	register(&command{
		name:    "serve",
		args:    "[-addr HOST:PORT]",
		summary: "serve the daemon's tree over HTTP, read-only (http.FileServerFS)",
		help: `Files are served with range requests and directories as listings, until
SIGINT or SIGTERM, or until the daemon ends (status 1). The address serving
is printed on stderr as "serving http://HOST:PORT/". The default address is
on the loopback interface only: give -addr :8080 to serve every interface.`,
		validate: nargs(0, 0, "no arguments"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			addr := fl.String("addr", "127.0.0.1:8080", "address to listen on (port 0: any free port)")
			return func(ctx context.Context, e *env, args []string) error {
				return serve(ctx, e, *addr)
			}
		},
	})
}

func serve(ctx context.Context, e *env, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           http.FileServerFS(seekFS{e.fsys(ctx)}),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	fmt.Fprintf(e.stderr, "serving http://%s/\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var ended error
	select {
	case err = <-errc:
		return err
	case <-ctx.Done():
	case <-e.d.Usermount.Done():
		// Nothing more can be served: every request would be a 500.
		ended = fmt.Errorf("the daemon's session ended: %w", syscall.ENOTCONN)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ended
}

// seekFS gives the view's files the io.Seeker that http.FileServerFS needs
// for range requests and content sniffing. The view's files read forward
// only: a seek backwards opens the file again, and a seek forward skips.
type seekFS struct{ fs.FS }

func (s seekFS) Open(name string) (fs.File, error) {
	f, err := s.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if _, ok := f.(io.Seeker); ok {
		return f, nil
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		return f, nil
	}
	return &seekFile{File: f, fsys: s.FS, name: name, size: st.Size()}, nil
}

type seekFile struct {
	fs.File
	fsys      fs.FS
	name      string
	size      int64
	pos, want int64 // where the stream is, where the reader wants to be
}

func (f *seekFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += f.want
	case io.SeekEnd:
		off += f.size
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	f.want = off
	return off, nil
}

func (f *seekFile) Read(p []byte) (int, error) {
	if f.want < f.pos {
		g, err := f.fsys.Open(f.name)
		if err != nil {
			return 0, err
		}
		f.File.Close()
		f.File, f.pos = g, 0
	}
	if f.want > f.pos {
		n, err := io.CopyN(io.Discard, f.File, f.want-f.pos)
		f.pos += n
		if err != nil {
			return 0, err
		}
	}
	n, err := f.File.Read(p)
	f.pos += int64(n)
	f.want = f.pos
	return n, err
}
