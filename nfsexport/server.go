package nfsexport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/perfuse-go/perfuse"
	nfs "github.com/willscott/go-nfs"
)

var randRead = rand.Read

// Defaults for Options.
const (
	DefaultAddr       = "127.0.0.1:2049"
	DefaultMaxHandles = 1 << 16
	DefaultHandleTTL  = time.Hour
	DefaultMaxConns   = 128
)

// idleTimeout closes a connection with no request for that long: clients
// reconnect when they need to (Linux closes its own idle NFS connections
// after 5 minutes), and idle connections must not hold every slot.
const idleTimeout = 15 * time.Minute

// Options configure a Server. The zero value is a read-write export with
// the defaults below.
type Options struct {
	// ReadOnly refuses every change on the server side, with
	// NFS3ERR_ROFS, before it reaches the daemon.
	ReadOnly bool
	// Cred is whom every request acts as in the daemon (nil: this
	// process). go-nfs passes no AUTH_SYS credentials on, so every client
	// acts as this one user.
	Cred *perfuse.Cred
	// MaxHandles bounds the nodes held for file handles
	// (DefaultMaxHandles when 0), and HandleTTL drops those unused that
	// long (DefaultHandleTTL when 0). A dropped handle is stale.
	MaxHandles int
	HandleTTL  time.Duration
	// MaxConns bounds the client connections open at once
	// (DefaultMaxConns when 0): go-nfs serves each with its own buffers,
	// of up to 16 MiB for a READ. Connections over it are closed at once.
	MaxConns int
	// Log gets the warnings (nil: slog.Default()).
	Log *slog.Logger
}

// Server exports one perfuse session over NFSv3, with the MOUNT protocol
// on the same TCP port. Create it with New and run it with Serve.
type Server struct {
	u        *perfuse.Usermount
	ctx      context.Context
	cancel   context.CancelFunc
	cred     *perfuse.Cred
	ro       bool
	log      *slog.Logger
	ttl      time.Duration
	maxConns int
	table    *table
	root     *fsys
	secret   string
	boot     [8]byte

	listings listings

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lis    []net.Listener
	closed bool
	warned map[uint32]bool // users refused on loopback, warned about
	// fullWarned: a connection over MaxConns was refused, with a warning.
	fullWarned bool
}

// New returns a server for the session u. The server does not own u: the
// caller unmounts it after Close.
func New(u *perfuse.Usermount, o Options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{u: u, ctx: ctx, cancel: cancel, cred: o.Cred, ro: o.ReadOnly,
		log: o.Log, ttl: o.HandleTTL, secret: newSecret(), conns: map[net.Conn]struct{}{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.ttl <= 0 {
		s.ttl = DefaultHandleTTL
	}
	s.maxConns = o.MaxConns
	if s.maxConns <= 0 {
		s.maxConns = DefaultMaxConns
	}
	max := o.MaxHandles
	if max <= 0 {
		max = DefaultMaxHandles
	}
	if _, err := randRead(s.boot[:]); err != nil {
		panic(err)
	}
	s.table = newTable(u, max, s.ttl)
	s.root = &fsys{s: s, root: s.table.root}
	s.listings.init(listingsMax)
	return s
}

// Listen listens on addr for Serve. An address other than a loopback one
// is allowed, with a warning: NFSv3's AUTH_SYS believes whatever identity
// a client claims, and this server takes none at all, so anyone who can
// reach the port reads (and unless read-only, changes) the whole tree as
// the export's user.
func (s *Server) Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nfsexport: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		s.log.Warn("nfsexport: serving beyond this machine: NFSv3 AUTH_SYS trusts the client, and every client acts as the export's user",
			"addr", l.Addr().String())
	}
	return l, nil
}

// Serve answers NFSv3 and MOUNT on l until Close, or until the daemon's
// session ends; then it closes l and every connection. It returns nil
// after Close, and an error saying why otherwise.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.lis = append(s.lis, l)
	s.mu.Unlock()

	go s.sweeper()
	srv := &nfs.Server{Handler: handler{s}, ID: s.boot, Context: s.ctx}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(&listener{Listener: l, s: s}) }()
	var err error
	select {
	case <-s.u.Done():
		err = fmt.Errorf("nfsexport: the daemon's session ended: %w", syscall.ENOTCONN)
		s.drain()
		s.shutdown()
		<-errc
	case err = <-errc:
		s.shutdown()
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed && !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	return err
}

// ListenAndServe listens on addr and serves there.
func (s *Server) ListenAndServe(addr string) error {
	l, err := s.Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Close stops the server, closes its connections and gives the daemon
// back every lookup held for file handles.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.shutdown()
	s.table.clear()
	return nil
}

// drainTime is how long connections are kept after the daemon's session
// ended, so that clients get errors for their requests (NFS3ERR_IO) rather
// than a dropped connection, on which clients such as libnfs reconnect
// and retry without end.
const drainTime = 3 * time.Second

// drain stops accepting connections and waits up to drainTime for the
// clients to leave.
func (s *Server) drain() {
	s.mu.Lock()
	for _, l := range s.lis {
		l.Close()
	}
	s.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	end := time.After(drainTime)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-t.C:
		case <-end:
			return
		}
	}
}

func (s *Server) shutdown() {
	s.cancel()
	s.mu.Lock()
	lis := s.lis
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Closing a connection takes mu itself.
	for _, l := range lis {
		l.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// Handles returns how many nodes are held for file handles.
func (s *Server) Handles() int { return s.table.len() }

func (s *Server) sweeper() {
	t := time.NewTicker(max(s.ttl/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.table.sweep()
		}
	}
}

// listener tracks connections, so that shutdown can end them.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ok, uid := allowedPeer(c); !ok {
			l.s.refused(uid)
			c.Close()
			continue
		}
		if tc, err := l.s.track(c); tc != nil || err != nil {
			return tc, err
		}
	}
}

// refused warns once per user of a connection refused on loopback.
func (s *Server) refused(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.warned == nil {
		s.warned = map[uint32]bool{}
	}
	if s.warned[uid] || len(s.warned) >= 64 {
		return
	}
	s.warned[uid] = true
	s.log.Warn("nfsexport: refused a loopback connection of another user", "uid", uid)
}

// track records c, for shutdown to close; it returns nil, nil when c was
// refused for being one too many.
func (s *Server) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ctx.Err() != nil {
		c.Close()
		return nil, net.ErrClosed
	}
	if len(s.conns) >= s.maxConns {
		if !s.fullWarned {
			s.fullWarned = true
			s.log.Warn("nfsexport: connections refused: too many open", "max", s.maxConns)
		}
		c.Close()
		return nil, nil
	}
	tc := &conn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

type conn struct {
	net.Conn
	s    *Server
	once sync.Once
}

// Read waits at most idleTimeout for a request.
func (c *conn) Read(p []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(idleTimeout))
	return c.Conn.Read(p)
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// child returns the ref of name in dir: from the daemon's entry timeout,
// else by LOOKUP.
func (s *Server) child(dir *ref, name string) (*ref, error) {
	if name == "." || name == ".." {
		return nil, syscall.EINVAL
	}
	if r := s.table.child(dir, name); r != nil {
		return r, nil
	}
	e, err := s.u.NodeLookup(s.ctx, s.cred, dir.node, name)
	if err != nil {
		return nil, err
	}
	return s.table.hold(e, dir, name), nil
}

// attr returns r's attributes: cached while the daemon's timeout allows,
// else by GETATTR.
func (s *Server) attr(r *ref) (a perfuse.Attr, err error) {
	if a, ok := s.table.cachedAttr(r); ok {
		return a, nil
	}
	out, err := s.u.NodeGetattr(s.ctx, s.cred, r.node, nil)
	if err != nil {
		return a, err
	}
	s.table.setAttr(r, out)
	return out.Attr, nil
}

// handler is the server as go-nfs's nfs.Handler (and nfs.CachingHandler,
// for READDIR cookies), kept out of Server's own API.
type handler struct{ *Server }

var (
	_ nfs.Handler        = handler{}
	_ nfs.CachingHandler = handler{}
)

// Mount answers MOUNT for "/" and for any directory under it, which the
// client then sees as its root.
func (s handler) Mount(ctx context.Context, c net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	flavors := []nfs.AuthFlavor{nfs.AuthFlavorNull, nfs.AuthFlavorUnix}
	p := strings.Trim(string(req.Dirpath), "/")
	if p == "" {
		return nfs.MountStatusOk, s.root, flavors
	}
	if strings.ContainsRune(p, 0) {
		return nfs.MountStatusErrInval, nil, nil
	}
	sub, err := s.root.Chroot(p)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nfs.MountStatusErrNoEnt, nil, nil
		case errors.Is(err, syscall.ENOTDIR):
			return nfs.MountStatusErrNotDir, nil, nil
		case errors.Is(err, fs.ErrPermission):
			return nfs.MountStatusErrAcces, nil, nil
		}
		return nfs.MountStatusErrIO, nil, nil
	}
	return nfs.MountStatusOk, sub, flavors
}

// Change returns the SETATTR side of the tree; nil when read-only.
func (s handler) Change(f billy.Filesystem) billy.Change {
	if s.ro {
		return nil
	}
	if c, ok := f.(billy.Change); ok {
		return c
	}
	return nil
}

// FSStat fills FSSTAT from the daemon's STATFS.
func (s handler) FSStat(ctx context.Context, f billy.Filesystem, st *nfs.FSStat) error {
	out, err := s.u.FsStatvfs(s.ctx, s.cred)
	if err != nil {
		return err
	}
	bs := uint64(out.Frsize)
	if bs == 0 {
		bs = uint64(out.Bsize)
	}
	st.TotalSize, st.FreeSize, st.AvailableSize = out.Blocks*bs, out.Bfree*bs, out.Bavail*bs
	st.TotalFiles, st.FreeFiles, st.AvailableFiles = out.Files, out.Ffree, out.Ffree
	return nil
}

// ToHandle returns the file handle of path: the node it names, which is
// held from now on (see Options.MaxHandles). A path that does not resolve
// gets an empty handle, which FromHandle refuses as stale.
func (s handler) ToHandle(f billy.Filesystem, p []string) []byte {
	fs, ok := f.(*fsys)
	if !ok {
		return nil
	}
	r, err := fs.resolve(fs.Join(p...))
	if err != nil {
		return nil
	}
	return s.table.handle(s.boot, r)
}

// FromHandle returns the path of a handle's node: its token, after its
// parent's for "..". A handle of another server instance, of a node
// dropped or of one the daemon no longer knows is NFS3ERR_STALE.
func (s handler) FromHandle(h []byte) (billy.Filesystem, []string, error) {
	id, gen, ok := parseHandle(s.boot, h)
	if !ok {
		return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale, WrappedErr: syscall.ESTALE}
	}
	r := s.table.get(id, gen)
	if r == nil {
		return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale, WrappedErr: syscall.ESTALE}
	}
	if r == s.table.root {
		return s.root, []string{}, nil
	}
	if _, err := s.attr(r); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESTALE) {
			s.table.drop(r)
			return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale, WrappedErr: err}
		}
		return nil, nil, statusError(err)
	}
	s.table.mu.Lock()
	parent := r.parent
	s.table.mu.Unlock()
	if parent == 0 || parent == perfuse.RootID {
		return s.root, []string{s.root.token(id)}, nil
	}
	return s.root, []string{s.root.token(parent), s.root.token(id)}, nil
}

// InvalidateHandle does nothing: go-nfs calls it after REMOVE and RENAME,
// and a renamed node keeps its handle; Remove drops a node whose last name
// went.
func (s handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit is the cap on held nodes; go-nfs lists at most half as
// many entries in one READDIR reply.
func (s handler) HandleLimit() int { return s.table.max }
