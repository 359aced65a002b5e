package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A user's mountpoint is looked up with that user's rights, never root's:
// root could reach directories the user cannot (under a 0700 parent), and
// the answer would tell the user they exist. The lookup may also block for
// ever (a path through a hung FUSE mount), and so runs in a short-lived
// helper process: this very binary, run again as the owner (uid, gid and
// groups) with helperFlag. It opens the target as OpenMountpoint does and
// passes the descriptor back over a socket; perfused gives up after
// ResolveTimeout and kills it. The helper's answer is not trusted (its
// owner may ptrace it): the descriptor it passes is checked again, by
// perfused, as any other.

// ResolveTimeout bounds the helper's lookup, and perfused's checks on the
// descriptor it passes back.
var ResolveTimeout = 5 * time.Second

// Limits on lookups given up on but not over yet (a helper killed while
// blocked in the kernel, a check still blocked), so hung lookups cannot pile
// up. Lookups that answer are bounded by perfused's pending connections.
const (
	maxStuckPerUser = 4
	maxStuck        = 64
)

const helperFlag = "-perfuse-mountpoint-helper"

// RunHelper runs the mountpoint helper when args (os.Args) ask for it, and
// returns its exit status and true; otherwise it returns false at once.
// perfused's main calls it first, as must the main of any program (a test
// binary) that calls OpenMountpoint for a user other than root.
func RunHelper(args []string) (int, bool) {
	if len(args) != 3 || args[1] != helperFlag {
		return 0, false
	}
	const reply = 3
	fd, err := unix.Open(args[2], openFlags, 0)
	var errno [4]byte
	var rights []byte
	if err != nil {
		e, _ := err.(unix.Errno)
		binary.NativeEndian.PutUint32(errno[:], uint32(e))
	} else {
		rights = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(reply, errno[:], rights, nil, unix.MSG_NOSIGNAL); err != nil {
		return 1, true
	}
	return 0, true
}

const openFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// stuck counts lookups given up on, per owner.
var stuck struct {
	sync.Mutex
	total int
	byUID map[uint32]int
}

func tooManyStuck(uid uint32) bool {
	stuck.Lock()
	defer stuck.Unlock()
	return stuck.total >= maxStuck || stuck.byUID[uid] >= maxStuckPerUser
}

// giveUp counts a lookup of uid given up on; the returned func says it is
// over.
func giveUp(uid uint32) func() {
	stuck.Lock()
	defer stuck.Unlock()
	if stuck.byUID == nil {
		stuck.byUID = map[uint32]int{}
	}
	stuck.total++
	stuck.byUID[uid]++
	return func() {
		stuck.Lock()
		defer stuck.Unlock()
		stuck.total--
		if stuck.byUID[uid]--; stuck.byUID[uid] <= 0 {
			delete(stuck.byUID, uid)
		}
	}
}

// openAs opens target as o, in a helper, within ResolveTimeout.
func openAs(ctx context.Context, target string, o Owner) (*os.File, error) {
	if tooManyStuck(o.UID) {
		return nil, fmt.Errorf("mountpoint %s: too many mountpoint lookups of uid %d still stuck (hung file systems?): %w", target, o.UID, syscall.EAGAIN)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.SetNonblock(fds[0], true)
	}
	if err != nil {
		return nil, fmt.Errorf("mountpoint %s: socketpair: %w", target, err)
	}
	// Ours is non-blocking, so os.NewFile puts it in the runtime poller.
	ours, theirs := os.NewFile(uintptr(fds[0]), "helper"), os.NewFile(uintptr(fds[1]), "helper-peer")
	defer ours.Close()
	groups := make([]uint32, len(o.Groups))
	copy(groups, o.Groups)
	cmd := exec.Command("/proc/self/exe", helperFlag, target)
	// The helper runs as the owner, who may read its environment and
	// trace it: it gets none of perfused's, and starts in "/".
	cmd.Env, cmd.Dir = []string{}, "/"
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: o.UID, Gid: o.GID, Groups: groups},
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("mountpoint %s: start the lookup helper: %w", target, err)
	}
	f, err := receiveFd(ctx, ours, ResolveTimeout)
	if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
		// A helper killed while blocked in the kernel may take long to
		// go: it counts as stuck until then.
		cmd.Process.Kill()
		over := giveUp(o.UID)
		go func() { cmd.Wait(); over() }()
	} else {
		go cmd.Wait()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("mountpoint %s: lookup given up: %w", target, ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("mountpoint %s: not reached within %v (a hung file system on the way?): %w", target, ResolveTimeout, syscall.ETIMEDOUT)
		}
		return nil, fmt.Errorf("mountpoint %s: %w", target, err)
	}
	return f, nil
}

// receiveFd reads the helper's answer on f (pollable) within wait, or
// until ctx ends.
func receiveFd(ctx context.Context, f *os.File, wait time.Duration) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := f.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	defer context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })()
	var (
		errno     [4]byte
		oob       = make([]byte, unix.CmsgSpace(4*4))
		n, oobn   int
		rerr      error
		truncated bool
	)
	err = rc.Read(func(fd uintptr) bool {
		var flags int
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), errno[:], oob, unix.MSG_CMSG_CLOEXEC)
		truncated = flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for i := range msgs {
			if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	bad := n != 4 || truncated || len(fds) > 1
	if e := unix.Errno(binary.NativeEndian.Uint32(errno[:])); !bad && e != 0 && len(fds) == 0 {
		return nil, e
	}
	if bad || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("malformed answer from the lookup helper: %w", syscall.EPROTO)
	}
	return os.NewFile(uintptr(fds[0]), "mountpoint"), nil
}

// checkBounded runs checkUserDir on f within ResolveTimeout, and returns
// f, or closes it. A check still blocked then (in a hung file system)
// counts as stuck, and keeps f, until it returns.
func checkBounded(ctx context.Context, f *os.File, target string, uid uint32, ro bool) (*os.File, error) {
	done := make(chan error, 1)
	go func() { done <- checkUserDir(f, target, uid, ro) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	case <-ctx.Done():
		over := giveUp(uid)
		go func() { <-done; f.Close(); over() }()
		return nil, fmt.Errorf("mountpoint %s: checks given up: %w", target, ctx.Err())
	case <-time.After(ResolveTimeout):
		over := giveUp(uid)
		go func() { <-done; f.Close(); over() }()
		return nil, fmt.Errorf("mountpoint %s: checks not done within %v (a hung file system?): %w", target, ResolveTimeout, syscall.ETIMEDOUT)
	}
}
