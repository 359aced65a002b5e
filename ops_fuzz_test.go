package perfuse

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// FuzzOpReplies feeds arbitrary reply payloads and statuses to the
// operations added with the full table (their decoders: CREATE's pair of
// structs, entries of created names, READLINK, WRITE, LSEEK, POLL, GETLK,
// xattr sizes and lists, READDIRPLUS with its lookup counting): each
// returns a result or an errno, never panics or loops, and READDIRPLUS
// leaves no lookup behind when every entry is refused.
func FuzzOpReplies(f *testing.F) {
	entry := entryOut(5, syscall.S_IFREG|0o644)
	for op := uint8(0); op < 12; op++ {
		f.Add(op, int32(0), []byte(nil))
		f.Add(op, int32(-38), []byte(nil))
	}
	f.Add(uint8(0), int32(0), append(structBytes(&entry), make([]byte, 16)...))
	f.Add(uint8(1), int32(0), structBytes(&entry))
	f.Add(uint8(2), int32(0), []byte("target\x00"))
	f.Add(uint8(9), int32(0), []byte("user.a\x00user.b\x00"))
	f.Add(uint8(10), int32(0), concat(direntPlus(0, 1, 1, 4, "."), direntPlus(7, 7, 2, 8, "a"), direntPlus(8, 8, 3, 8, "b")))
	f.Fuzz(func(t *testing.T, op uint8, status int32, payload []byte) {
		cb, _ := memCallbacks(t, func(m *Message) []byte {
			if (m.Opcode() == OpReaddirplus || m.Opcode() == OpReaddir) && nativeEndian.Uint64(m.InPayload()[8:]) != 0 {
				return replyTo(m, 0, nil)
			}
			return replyTo(m, status, payload)
		})
		u, err := Init(cb, nil)
		if err != nil {
			t.Fatal(err)
		}
		u.lim.Store(&limits{minor: 31, flags: initFlags, maxWrite: 1 << 20, maxRead: 128 << 10})
		ctx := context.Background()
		file := &Node{id: 5}
		file.mode.Store(syscall.S_IFREG)
		h := u.opened(&Handle{node: file, fh: 1})
		dh := &Handle{node: u.Root(), fh: 2, dir: true}
		switch op % 12 {
		case 0:
			_, _, err = u.NodeCreate(ctx, nil, u.Root(), "a", syscall.O_RDWR, 0o644, 0)
		case 1:
			_, err = u.NodeMkdir(ctx, nil, u.Root(), "d", 0o755, 0)
		case 2:
			_, err = u.NodeReadlink(ctx, nil, file)
		case 3:
			_, err = u.NodeWrite(ctx, nil, h, make([]byte, 100), 0, 0, 0)
		case 4:
			_, err = u.NodeLseek(ctx, nil, h, 0, SeekHole)
		case 5:
			_, err = u.NodePoll(ctx, nil, h, 0, 0, PollIn)
		case 6:
			_, err = u.NodeAdvlock(ctx, nil, h, OpGetlk, 1, FileLock{End: 10, Typ: syscall.F_RDLCK}, 0)
		case 7:
			_, _, err = u.NodeGetextattr(ctx, nil, file, "user.a", 0)
		case 8:
			_, _, err = u.NodeGetextattr(ctx, nil, file, "user.a", 16)
		case 9:
			_, _, err = u.NodeListextattr(ctx, nil, file, 64)
		case 10:
			err = u.NodeReaddirplus(ctx, nil, dh, 0, func(DirentPlus) bool { return false })
			if u.NodeCount() != 1 {
				t.Fatalf("%d nodes held after refusing every entry", u.NodeCount())
			}
		case 11:
			_, err = u.NodeSetattr(ctx, nil, file, h, &SetAttrIn{Valid: FattrSize})
		}
		var errno syscall.Errno
		if err != nil && !errors.As(err, &errno) {
			t.Fatalf("op %d: error %v carries no errno", op%12, err)
		}
	})
}
