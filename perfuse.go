// Package perfuse is a Go port of NetBSD's libperfuse: a userspace FUSE
// client. It turns filesystem operations into FUSE kernel-protocol frames,
// carries them over a local socket to an ordinary FUSE daemon (which
// believes it is talking to /dev/fuse), and decodes the replies.
//
// It has two faces. The daemon side replaces open("/dev/fuse") and mount(2)
// with [Open] and [Mount]. The relay side ([Init], [Usermount.FsInit],
// [Usermount.Mainloop], the operation table) drives the daemon through
// pluggable [Callbacks]; [SocketCallbacks] is the default socket transport
// and [Attach] sets up a whole mount-free session on a socket in one call.
//
// # Names
//
// libperfuse → perfuse:
//
//	perfuse_open                Open
//	perfuse_mount               Mount
//	struct perfuse_mount_info   MountInfo (owner from peer credentials)
//	(perfused get_mount_info)   ReadMountFrame, DecodeMountFrame, EncodeMountFrame
//	struct perfuse_callbacks    Callbacks
//	perfuse_msg_t               *Message
//	pc_new_msg / pc_xchg_msg    Callbacks.NewMsg / Callbacks.XchgMsg
//	pc_destroy_msg              Callbacks.DestroyMsg
//	pc_get_inhdr/_inpayload     Message.InHeader / InPayload
//	pc_get_outhdr/_outpayload   Message.OutHeader / OutPayload
//	pc_umount                   Callbacks.Umount
//	pc_fsreq                    Usermount.FsReq, which a transport calls (Init writes nothing into Callbacks)
//	perfuse_init                Init
//	perfuse_fs_init             Usermount.FsInit
//	perfuse_mainloop            Usermount.Mainloop
//	perfuse_inloop              Usermount.InLoop
//	perfuse_unmount             Usermount.Unmount
//	perfuse_setspecific         Usermount.SetSpecific
//	perfuse_getspecific         Usermount.Specific
//	perfuse_next_unique         Usermount.NextUnique
//	perfuse_get_nodeid          Usermount.NodeID (and Node.ID)
//	perfuse_opname              OpName (and Opcode.String)
//	perfuse_trace_dump          Usermount.TraceDump
//	perfuse_fsreq               Usermount.FsReq
//	perfuse_bufvar_from_env     BufVarFromEnv
//	perfuse_diagflags           Diag, ParseDiag, WithDiag, Usermount.SetDiag
//	PERFUSE_OPTIONS             WithAccess, WithCreat (the variable is read by Init)
//	perfuse_fs_statvfs          Usermount.FsStatvfs
//	perfuse_fs_sync             Usermount.FsSync
//	perfuse_fs_unmount          Usermount.FsUnmount, FsUnmountForce
//	perfuse_node_lookup         Usermount.NodeLookup
//	perfuse_node_create         Usermount.NodeCreate (MKNOD+OPEN fallback)
//	perfuse_node_mknod          Usermount.NodeMknod
//	perfuse_node_mkdir          Usermount.NodeMkdir
//	perfuse_node_symlink        Usermount.NodeSymlink
//	perfuse_node_link           Usermount.NodeLink
//	perfuse_node_remove         Usermount.NodeRemove
//	perfuse_node_rmdir          Usermount.NodeRmdir
//	perfuse_node_rename         Usermount.NodeRename (RENAME2 with flags)
//	perfuse_node_readlink       Usermount.NodeReadlink
//	perfuse_node_open/open2     Usermount.NodeOpen
//	perfuse_node_close          Usermount.NodeClose (FLUSH, then RELEASE)
//	(release at inactive)       Usermount.NodeRelease (per open, as Linux)
//	perfuse_node_inactive       Usermount.NodeInactive
//	perfuse_node_access         Usermount.NodeAccess
//	perfuse_node_getattr(_ttl)  Usermount.NodeGetattr
//	perfuse_node_setattr(_ttl)  Usermount.NodeSetattr
//	perfuse_node_poll           Usermount.NodePoll
//	perfuse_node_fsync          Usermount.NodeFsync (FSYNC or FSYNCDIR)
//	perfuse_node_readdir        Usermount.NodeReaddir, NodeReaddirplus
//	perfuse_node_read           Usermount.NodeRead
//	perfuse_node_write(2)       Usermount.NodeWrite
//	perfuse_node_fallocate      Usermount.NodeFallocate
//	perfuse_node_advlock        Usermount.NodeAdvlock
//	perfuse_node_getextattr     Usermount.NodeGetextattr
//	perfuse_node_setextattr     Usermount.NodeSetextattr
//	perfuse_node_listextattr    Usermount.NodeListextattr
//	perfuse_node_deleteextattr  Usermount.NodeDeleteextattr
//	perfuse_node_reclaim(2)     Usermount.NodeReclaim
//	perfuse_node_print          Usermount.NodePrint
//	perfuse_node_pathconf       Usermount.NodePathconf
//	(Linux only)                NodeFlush, NodeLseek, NodeCopyFileRange, NotifyReply, HandleFor
//
// # Deviations from libperfuse
//
// Uniques start at 2 and step by 2, INTERRUPT uses unique|1, and requests
// without a node carry nodeid 0, as Linux's kernel does. Every error (a short
// or malformed reply, a positive status, a dead daemon, an INIT failure) is
// returned to the caller as an errno (EPROTO, EIO, ENOTCONN…), never a
// process exit. File handles are per open, each balanced by one RELEASE.
package perfuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse/internal/ratelog"
	"github.com/perfuse-go/perfuse/internal/transport"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// Wait says whether an exchange waits for the daemon's reply.
type Wait int

const (
	// WaitReply blocks until the reply with the request's unique arrives.
	WaitReply Wait = iota
	// NoReply sends and returns; any reply goes to FsReq.
	NoReply
)

// Callbacks is the pluggable message transport, as struct
// perfuse_callbacks is. XchgMsg is required; the other fields have
// defaults. A transport only moves bytes: it stores the reply frame with
// Message.SetReply, and the Usermount checks it (length, status, protocol)
// so a malformed reply is an error for that caller alone.
type Callbacks struct {
	// NewMsg allocates a request of payloadLen zeroed bytes after its in
	// header. The Usermount fills the header (length, opcode, unique,
	// nodeid, credentials) after it returns. Default: NewMessage.
	NewMsg func(u *Usermount, op Opcode, payloadLen int) *Message
	// XchgMsg sends m. With WaitReply it returns once m holds the reply
	// with the same unique, whatever order replies come in; a transport
	// failure is an error (ENOTCONN once the daemon is gone). Cancelling
	// ctx should send FUSE_INTERRUPT and keep waiting.
	XchgMsg func(ctx context.Context, u *Usermount, m *Message, wait Wait) error
	// DestroyMsg releases m after use. Default: nothing (garbage
	// collected); a transport that pools buffers recycles them here.
	DestroyMsg func(m *Message)
	// MaxFrame is the largest frame the transport carries; INIT caps
	// max_write and read sizes by it. 0 means PERFUSE_BUFSIZE.
	MaxFrame int
	// Umount tears the transport down after DESTROY. Optional.
	Umount func(u *Usermount)
	// Start is called once as the main loop begins (Mainloop, or Attach),
	// for a transport that watches its connection from then on: the
	// socket transport ends the session with Shutdown when the daemon
	// goes. Optional. (Not in libperfuse, where puffs' main loop reads the
	// socket.)
	Start func(u *Usermount) error
	// stats reports the socket transport's counters, for TraceDump.
	stats func() transport.Stats
}

// Init creates the session for the mount described by mi, as
// perfuse_init does, with a copy of cb: later changes to *cb do not
// reach it, and Init changes nothing in *cb. (perfuse_init wrote its
// handler into pc_fsreq; here a transport hands unsolicited frames,
// notifications and replies nobody waits for, to Usermount.FsReq.)
// PERFUSE_OPTIONS is read here; opts apply after it. Nothing is sent
// until FsInit.
func Init(cb *Callbacks, mi *MountInfo, opts ...Option) (*Usermount, error) {
	if cb == nil || cb.XchgMsg == nil {
		return nil, fmt.Errorf("perfuse: Init: callbacks without XchgMsg: %w", syscall.EINVAL)
	}
	conf := newConfig(opts)
	own := *cb
	fillDefaults(&own)
	u := &Usermount{
		cb:    &own,
		conf:  conf,
		log:   conf.log,
		warn:  ratelog.New(conf.log, time.Second),
		nodes: make(map[uint64]*Node),
		done:  make(chan struct{}),
	}
	if mi != nil {
		u.mi = *mi
		if u.mi.UID != 0 {
			// A user's mount never honours setuid bits or devices
			// (MNT_NOSUID|MNT_NODEV forced, as perfuse_init does).
			u.mi.Flags |= mountNoSuid | mountNoDev
		}
	}
	u.diag.Store(uint32(conf.diag))
	u.noAccess.Store(conf.noAccess)
	u.noCreat.Store(conf.noCreat)
	u.unique.Store(0)
	u.self = Cred{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Pid: uint32(os.Getpid())}
	u.orphans.init()
	u.root = &Node{id: RootID}
	u.root.mode.Store(syscall.S_IFDIR)
	u.root.name.Store("")
	u.nodes[RootID] = u.root
	return u, nil
}

// fillDefaults sets the session's callbacks left nil, so that it can call
// any of them as libperfuse does.
func fillDefaults(cb *Callbacks) {
	if cb.NewMsg == nil {
		cb.NewMsg = func(_ *Usermount, op Opcode, n int) *Message { return NewMessage(op, n) }
	}
	if cb.DestroyMsg == nil {
		cb.DestroyMsg = func(*Message) {}
	}
}

// Linux mount flags forced on for non-root owners.
const (
	mountNoSuid = 0x2 // MS_NOSUID
	mountNoDev  = 0x4 // MS_NODEV
)

// MountInfo returns the mount this session serves, with the effective flags.
func (u *Usermount) MountInfo() MountInfo { return u.mi }

// Root returns the root node (nodeid 1).
func (u *Usermount) Root() *Node { return u.root }

// FsInit performs the FUSE INIT handshake. (perfuse_fs_init also mounts;
// on Linux the kernel's own INIT must see what the daemon negotiated, so
// the relay, cmd/perfused, mounts after FsInit.) Errors are returned.
func (u *Usermount) FsInit(ctx context.Context) error { return u.init(ctx) }

// Mainloop runs the session until it ends: after Unmount, or when the
// transport reports the daemon gone through Shutdown. It returns nil after
// a clean unmount.
func (u *Usermount) Mainloop() error {
	u.startLoop()
	<-u.done
	return u.doneErr
}

func (u *Usermount) startLoop() {
	if u.inLoop.Swap(true) {
		return
	}
	if u.cb.Start != nil {
		if err := u.cb.Start(u); err != nil {
			u.Shutdown(err)
		}
	}
}

// InLoop reports whether Mainloop has started.
func (u *Usermount) InLoop() bool { return u.inLoop.Load() }

// Done is closed when the session has ended.
func (u *Usermount) Done() <-chan struct{} { return u.done }

// Shutdown ends the session with err (nil for a clean end): Mainloop
// returns err. Transports call it when the daemon is gone.
func (u *Usermount) Shutdown(err error) {
	u.doneOnce.Do(func() {
		u.doneErr = err
		close(u.done)
	})
}

// Unmount ends the session: FUSE_DESTROY, then the Umount callback. It is
// perfuse_unmount and perfuse_fs_unmount in one; a relay that owns a kernel
// mount removes it before calling this.
func (u *Usermount) Unmount(ctx context.Context) error {
	u.unmounting.Store(true)
	errc := make(chan error, 1)
	// The kernel never interrupts DESTROY; the deadline below tears the
	// transport down instead.
	go func() { errc <- u.FsUnmount(context.WithoutCancel(ctx)) }()
	var err error
	// A hung daemon must not hang the unmount: past the deadline the
	// transport is torn down, which ends the DESTROY exchange too.
	wait, cancel := context.WithTimeout(ctx, destroyTimeout)
	defer cancel()
	select {
	case err = <-errc:
	case <-wait.Done():
		err = fmt.Errorf("perfuse: DESTROY unanswered: %w", syscall.ETIMEDOUT)
	}
	if u.cb.Umount != nil {
		u.cb.Umount(u)
	}
	u.Shutdown(nil)
	return err
}

// destroyTimeout bounds how long Unmount waits for DESTROY's reply.
const destroyTimeout = 5 * time.Second

// SetSpecific stores the relay's own value (perfuse_setspecific).
func (u *Usermount) SetSpecific(v any) { u.specific.Store(&v) }

// Specific returns the value stored by SetSpecific, or nil.
func (u *Usermount) Specific() any {
	if p, _ := u.specific.Load().(*any); p != nil {
		return *p
	}
	return nil
}

// NextUnique returns the unique for a new request: 2, 4, 6, … (the kernel's
// numbering; odd values are INTERRUPTs, 0 is for notifications).
func (u *Usermount) NextUnique() uint64 { return u.unique.Add(2) }

// NodeID returns n's nodeid, or 0 for nil (requests without a node).
func (u *Usermount) NodeID(n *Node) uint64 {
	if n == nil {
		return 0
	}
	return n.id
}

// SetNotifyHandler registers the handler for daemon notifications. Without
// one they are logged and dropped.
func (u *Usermount) SetNotifyHandler(h func(*Notification)) {
	if h == nil {
		u.notify.Store(nil)
		return
	}
	u.notify.Store(&h)
}

// FsReq handles an unsolicited frame, as perfuse_fsreq does: a
// notification (unique 0, its code in the status field) goes to the
// notification handler; for a reply
// nobody waits for, success and ENOENT are dropped quietly and anything
// else is logged.
func (u *Usermount) FsReq(m *Message) {
	defer u.destroy(m)
	h, ok := m.OutHeader()
	if !ok {
		u.warn.Warn("short", "perfuse: unsolicited frame shorter than a header", "bytes", len(m.Reply()))
		return
	}
	if h.Unique == 0 {
		u.gotNotification(NotifyCode(h.Status), m.OutPayload())
		return
	}
	if u.orphans.lateReply(u, h, m) {
		return
	}
	switch syscall.Errno(-h.Status) {
	case 0, syscall.ENOENT:
		u.debug(DiagFuse, "perfuse: unsolicited reply", "unique", h.Unique, "error", syscall.Errno(-h.Status))
	case syscall.ENOTCONN, syscall.EAGAIN, syscall.EMSGSIZE:
		u.warn.Warn("failed", "perfuse: operation failed", "unique", h.Unique, "error", syscall.Errno(-h.Status))
	default:
		u.warn.Warn("unexpected", "perfuse: unexpected frame", "unique", h.Unique, "error", h.Status)
	}
}

func (u *Usermount) gotNotification(code NotifyCode, payload []byte) {
	n, err := ParseNotification(code, payload)
	if err != nil {
		u.warn.Warn("bad-notify", "perfuse: bad notification dropped", "err", err)
		return
	}
	if h := u.notify.Load(); h != nil {
		(*h)(n)
		return
	}
	u.warn.Warn("no-notify-handler", "perfuse: notification dropped: no handler", "code", code, "nodeid", n.Nodeid)
}

func (u *Usermount) destroy(m *Message) {
	if u.cb.DestroyMsg != nil {
		u.cb.DestroyMsg(m)
	}
}

// noCreds are the requests the kernel sends without credentials
// (args.nocreds, or no caller at all).
var noCreds = map[Opcode]bool{OpInit: true, OpDestroy: true, OpForget: true, OpBatchForget: true, OpNotifyReply: true}

// newMsg builds a request on node n (nil: no node) for cred.
func (u *Usermount) newMsg(op Opcode, n *Node, payloadLen int, cred *Cred) *Message {
	var m *Message
	if u.cb.NewMsg != nil {
		m = u.cb.NewMsg(u, op, payloadLen)
	}
	if m == nil || len(m.in) != inHeaderSize+payloadLen {
		m = NewMessage(op, payloadLen)
	}
	h := m.InHeader()
	h.Length = uint32(len(m.in))
	h.Opcode = uint32(op)
	h.Unique = u.NextUnique()
	h.NodeId = u.NodeID(n)
	switch {
	case cred != nil:
		h.Uid, h.Gid, h.Pid = cred.Uid, cred.Gid, cred.Pid
	case !noCreds[op]:
		// No caller named: the request is this process's own (as the
		// kernel's are its caller's). Daemons such as lxcfs answer by pid.
		h.Uid, h.Gid, h.Pid = u.self.Uid, u.self.Gid, u.self.Pid
	}
	return m
}

// xchg sends m and checks its reply: the header must echo the unique, its
// length match the frame, its status be a negated errno, and a successful
// payload be outSize bytes when the opcode has a fixed reply size. The
// returned error is the daemon's errno or a protocol error (EPROTO). A
// context that has already ended fails before anything is sent.
func (u *Usermount) xchg(ctx context.Context, n *Node, m *Message, wait Wait) error {
	op := m.Opcode()
	if ended(ctx) {
		return fmt.Errorf("perfuse: %s not sent: %w", OpName(op), ctxErrno(ctx))
	}
	if d := u.conf.requestTimeout; d > 0 && wait == WaitReply {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	rec := u.trace.begin(u, op, n, m)
	u.xchgCount.Add(1)
	orphanable := wait == WaitReply && u.orphans.track(op, m)
	err := u.cb.XchgMsg(ctx, u, m, wait)
	if orphanable && (err == nil || !isContextErr(err)) {
		// Answered, or failed in a way that leaves no reply to come.
		u.orphans.untrack(m)
	}
	if err == nil && wait == WaitReply {
		err = u.checkReply(op, m)
	}
	u.trace.end(u, rec, err)
	u.logExchange(m, err)
	return err
}

// KernelRequest marks ctx as the context of a kernel request, for a
// relay: cancelling it stands for the kernel's FUSE_INTERRUPT, which the
// kernel sends when its caller gets a signal, and then goes on waiting.
// So the request is sent even if ctx has already ended, FUSE_INTERRUPT
// follows it, and the daemon's answer is waited for however long it
// takes, as on a direct mount (only the connection failing ends the wait).
// Without it, an ended context sends nothing and the wait after
// INTERRUPT is bounded (WithInterruptGrace).
func KernelRequest(ctx context.Context) context.Context { return transport.InterruptOnly(ctx) }

// ended reports whether ctx has ended in a way that stops sending: a
// kernel request's interruption does not (KernelRequest).
func ended(ctx context.Context) bool {
	return ctx.Err() != nil && !transport.IsInterruptOnly(ctx)
}

// ctxErrno is the error of a request whose context has ended: the
// context's error with EINTR (cancelled, as an interrupted system call) or
// ETIMEDOUT (deadline).
func ctxErrno(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ctx.Err(), syscall.ETIMEDOUT)
	}
	return fmt.Errorf("%w: %w", ctx.Err(), syscall.EINTR)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (u *Usermount) checkReply(op Opcode, m *Message) error {
	h, ok := m.OutHeader()
	if !ok {
		return errProto(op, "frame of %d bytes has no header", len(m.out))
	}
	if int(h.Length) != m.replyLen() {
		return errProto(op, "header length %d, frame %d bytes", h.Length, m.replyLen())
	}
	if h.Unique != m.InHeader().Unique {
		return errProto(op, "unique %d answers request %d", h.Unique, m.InHeader().Unique)
	}
	if err := replyErrno(op, h.Status); err != nil {
		if len(m.OutPayload()) != 0 {
			// The kernel refuses error replies that carry a payload.
			return errProto(op, "error %d with %d bytes of payload", h.Status, len(m.OutPayload()))
		}
		return err
	}
	want := row(op).Out
	if got := len(m.OutPayload()); want != wire.ReplyVariable && got != want {
		return errProto(op, "payload is %d bytes, want %d", got, want)
	}
	return nil
}

func (u *Usermount) logExchange(m *Message, err error) {
	d := Diag(u.diag.Load())
	if d&DiagFuse != 0 {
		h := m.InHeader()
		u.log.Info("perfuse: exchange", "unique", h.Unique, "nodeid", h.NodeId, "opcode", Opcode(h.Opcode), "err", err)
	}
	if d&DiagDump != 0 {
		u.log.Info("perfuse: frames", "request", fmt.Sprintf("% x", m.Request()), "reply", fmt.Sprintf("% x", m.out))
	}
}

// diagOn reports whether class is enabled. Callers on a request's path
// test it before building debug's arguments, which would allocate.
func (u *Usermount) diagOn(class Diag) bool { return Diag(u.diag.Load())&class != 0 }

// debug logs msg when class is enabled.
func (u *Usermount) debug(class Diag, msg string, args ...any) {
	if u.diagOn(class) {
		u.log.Log(context.Background(), slog.LevelInfo, msg, args...)
	}
}
