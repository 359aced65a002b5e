package perfuse

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// FuseBufSize is libperfuse's FUSE_BUFSIZE: the largest FUSE frame it expects
// (max(pagesize+4096, 0x21000) for pages up to 128 KiB).
const FuseBufSize = 135168

// DefaultBufSize is the default SO_SNDBUF/SO_RCVBUF for the socket between a
// FUSE daemon and perfuse, as libperfuse sets it (16 × FUSE_BUFSIZE).
const DefaultBufSize = 16 * FuseBufSize

// BufVarFromEnv mirrors perfuse_bufvar_from_env: it returns the value of the
// environment variable name parsed as a uint32 in base 0 (decimal, 0x hex,
// leading-0 octal), or def when the variable is unset. A value that does not
// convert is logged and def is returned.
func BufVarFromEnv(name string, def uint32) uint32 {
	s, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	// strtoi's base 0 knows 0x and leading-0 octal, not Go's 0o, 0b or _.
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil || strings.Contains(s, "_") || strings.HasPrefix(s, "0o") || strings.HasPrefix(s, "0O") ||
		strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0B") {
		slog.Warn("perfuse: conversion to uint32_t failed", "var", name, "value", s, "using", def)
		return def
	}
	return uint32(v)
}

// Diag selects diagnostic classes, with libperfuse's PDF_* values.
type Diag uint32

// Diagnostic classes. libperfuse's PDF_FOREGROUND and PDF_SYSLOG are
// not classes here: perfused never forks (its -f only adds misc), and
// logs through the session's slog.Logger.
const (
	DiagFuse     Diag = 0x0002 // each exchange: unique, nodeid, opcode, result
	DiagDump     Diag = 0x0004 // hex of each frame
	DiagPuffs    Diag = 0x0008 // each kernel request, in a relay (go-fuse's debug log)
	DiagFH       Diag = 0x0010 // file handles
	DiagReclaim  Diag = 0x0020 // reclaim and FORGET
	DiagReaddir  Diag = 0x0040 // each READDIR(PLUS) reply: cookies and entries
	DiagRequeue  Diag = 0x0080 // a request that waits behind another on its node
	DiagSync     Diag = 0x0100 // FSYNC, FSYNCDIR and their results
	DiagMisc     Diag = 0x0200
	DiagFilename Diag = 0x0800 // the names each request carries
	DiagResize   Diag = 0x1000 // a read or write split into several requests
	DiagTrace    Diag = 0x2000 // keep trace records for TraceDump
)

var diagNames = []struct {
	name string
	d    Diag
}{
	{"fuse", DiagFuse}, {"puffs", DiagPuffs}, {"dump", DiagDump}, {"fh", DiagFH},
	{"reclaim", DiagReclaim}, {"readdir", DiagReaddir}, {"requeue", DiagRequeue},
	{"sync", DiagSync}, {"misc", DiagMisc}, {"filename", DiagFilename},
	{"resize", DiagResize}, {"trace", DiagTrace},
}

// ParseDiag parses a comma-separated list of class names (fuse, puffs,
// dump, fh, reclaim, readdir, requeue, sync, misc, filename, resize, trace)
// as perfused's -d does, returning the classes and the unknown words.
func ParseDiag(s string) (Diag, []string) {
	var d Diag
	var unknown []string
next:
	for _, w := range strings.Split(s, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		for _, n := range diagNames {
			if n.name == w {
				d |= n.d
				continue next
			}
		}
		unknown = append(unknown, w)
	}
	return d, unknown
}

func (d Diag) String() string {
	var names []string
	for _, n := range diagNames {
		if d&n.d != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Option configures a session (Init, Attach) or a socket (SocketCallbacks).
type Option func(*config)

// WithLogger sends diagnostics to l instead of slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithDiag enables diagnostic classes.
func WithDiag(d Diag) Option { return func(c *config) { c.diag |= d } }

// WithAccess chooses whether FUSE_ACCESS is sent (true) or access is
// emulated from cached attributes (false, libperfuse's default), as the
// PERFUSE_OPTIONS tokens enable_access and disable_access do.
func WithAccess(on bool) Option { return func(c *config) { c.noAccess = !on } }

// WithCreat chooses whether FUSE_CREATE is used (true, the default) or
// emulated with MKNOD and OPEN (false), as enable_creat and disable_creat do.
func WithCreat(on bool) Option { return func(c *config) { c.noCreat = !on } }

// WithBufSize sets the socket buffer size, overriding PERFUSE_BUFSIZE.
func WithBufSize(n int) Option { return func(c *config) { c.bufSize = n } }

// WithInterruptGrace sets how long a request whose context ended waits for
// the daemon's answer after FUSE_INTERRUPT before returning the context's
// error (default 2 s; negative: not at all). A reply that comes later is
// still accounted for: an entry it carries is forgotten, an open released.
func WithInterruptGrace(d time.Duration) Option { return func(c *config) { c.interruptGrace = d } }

// WithRequestTimeout bounds every request of the session: one that the
// daemon has not answered within d is interrupted, as a cancelled context
// is, and fails with ETIMEDOUT (wrapping context.DeadlineExceeded). Off
// (0) by default: a daemon's operation may legitimately take long, and each
// caller's context already bounds its own requests.
func WithRequestTimeout(d time.Duration) Option { return func(c *config) { c.requestTimeout = d } }

func newConfig(opts []Option) config {
	c := config{
		log:      slog.Default(),
		noAccess: true,
		bufSize:  int(BufVarFromEnv("PERFUSE_BUFSIZE", DefaultBufSize)),
	}
	applyPerfuseOptions(&c, os.Getenv("PERFUSE_OPTIONS"))
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// applyPerfuseOptions reads PERFUSE_OPTIONS tokens in order, later ones
// winning; unknown tokens are ignored, as upstream does.
func applyPerfuseOptions(c *config, s string) {
	for _, tok := range strings.Split(s, ",") {
		switch strings.TrimSpace(tok) {
		case "enable_access":
			c.noAccess = false
		case "disable_access":
			c.noAccess = true
		case "enable_creat":
			c.noCreat = false
		case "disable_creat":
			c.noCreat = true
		}
	}
}

// SetDiag replaces the session's diagnostic classes (perfused's -d and its
// SIGUSR1 trace toggle).
func (u *Usermount) SetDiag(d Diag) { u.diag.Store(uint32(d)) }

// Diag returns the session's diagnostic classes.
func (u *Usermount) Diag() Diag { return Diag(u.diag.Load()) }
