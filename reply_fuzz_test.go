package perfuse

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FuzzReply feeds arbitrary reply payloads and statuses to every operation
// of the table through pluggable callbacks: each must return a result or
// an errno, never panic or loop.
func FuzzReply(f *testing.F) {
	entry := entryOut(5, syscall.S_IFREG|0o644)
	attr := attrOut(5, syscall.S_IFREG|0o644, 10)
	init := fuse.InitOut{Major: 7, Minor: 31, MaxWrite: 1 << 20}
	for op := uint8(0); op < 7; op++ {
		f.Add(op, int32(0), []byte(nil))
		f.Add(op, int32(-2), []byte(nil))
		f.Add(op, int32(3), []byte("x"))
	}
	f.Add(uint8(0), int32(0), structBytes(&entry))
	f.Add(uint8(1), int32(0), structBytes(&attr))
	f.Add(uint8(4), int32(0), direntsSeed)
	f.Add(uint8(6), int32(0), structBytes(&init)[:24])
	f.Fuzz(func(t *testing.T, op uint8, status int32, payload []byte) {
		cb, _ := memCallbacks(t, func(m *Message) []byte {
			if m.Opcode() == OpReaddir && len(payload) == 0 {
				return replyTo(m, 0, nil)
			}
			return replyTo(m, status, payload)
		})
		u, err := Init(cb, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		file := &Node{id: 5}
		file.mode.Store(syscall.S_IFREG)
		h := &Handle{node: file, fh: 1}
		dh := &Handle{node: u.Root(), fh: 2, dir: true}
		switch op % 7 {
		case 0:
			_, err = u.NodeLookup(ctx, nil, u.Root(), "a")
		case 1:
			_, err = u.NodeGetattr(ctx, nil, file, h)
		case 2:
			_, err = u.NodeOpen(ctx, nil, file, syscall.O_RDONLY)
		case 3:
			_, err = u.NodeRead(ctx, nil, h, make([]byte, 64), 0)
		case 4:
			n := 0
			err = u.NodeReaddir(ctx, nil, dh, 0, func(Dirent) bool { n++; return n < 10000 })
		case 5:
			_, err = u.FsStatvfs(ctx, nil)
		case 6:
			err = u.FsInit(ctx)
		}
		var errno syscall.Errno
		if err != nil && !errors.As(err, &errno) {
			t.Fatalf("op %d: error %v carries no errno", op%7, err)
		}
	})
}
