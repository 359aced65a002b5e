package perfuse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirent encodes one READDIR record as a daemon does.
func dirent(ino, off uint64, typ uint32, name string) []byte {
	b := make([]byte, align8(direntHeaderSize+len(name)))
	nativeEndian.PutUint64(b, ino)
	nativeEndian.PutUint64(b[8:], off)
	nativeEndian.PutUint32(b[16:], uint32(len(name)))
	nativeEndian.PutUint32(b[20:], typ)
	copy(b[direntHeaderSize:], name)
	return b
}

func direntPlus(nodeid uint64, ino, off uint64, typ uint32, name string) []byte {
	e := fuse.EntryOut{NodeId: nodeid}
	e.Attr.Ino = ino
	e.Attr.Mode = typ << 12
	return append(append([]byte(nil), structBytes(&e)...), dirent(ino, off, typ, name)...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// seed reads a testdata file, or writes it with -update.
func seed(t testing.TB, name string, gen []byte) []byte {
	p := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(p, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	return b
}

var direntsSeed = concat(dirent(1, 1, 4, "."), dirent(1, 2, 4, ".."), dirent(7, 3, 8, "file.txt"), dirent(9, 4, 10, "a-much-longer-name-that-spans"))

func TestOpNames(t *testing.T) {
	for op, want := range map[Opcode]string{
		OpLookup: "LOOKUP", OpInit: "INIT", OpNotifyReply: "NOTIFY_REPLY", OpBatchForget: "BATCH_FORGET",
		OpFallocate: "FALLOCATE", OpCopyFileRange64: "COPY_FILE_RANGE_64", OpCuseInit: "CUSE_INIT",
		7: "UNKNOWN", 19: "UNKNOWN", 54: "UNKNOWN", 1 << 31: "UNKNOWN",
	} {
		if got := OpName(op); got != want {
			t.Errorf("OpName(%d) = %q, want %q", op, got, want)
		}
	}
	for op := Opcode(1); op <= maxOpcode; op++ {
		if op == 7 || op == 19 {
			continue
		}
		if OpName(op) == "UNKNOWN" {
			t.Errorf("opcode %d has no name", op)
		}
	}
}

func TestParseDirents(t *testing.T) {
	b := seed(t, "dirents.bin", direntsSeed)
	var got []Dirent
	if err := ParseDirents(b, func(d Dirent) bool { got = append(got, d); return true }); err != nil {
		t.Fatal(err)
	}
	want := []Dirent{{1, 1, 4, "."}, {1, 2, 4, ".."}, {7, 3, 8, "file.txt"}, {9, 4, 10, "a-much-longer-name-that-spans"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// Stopping early stops the walk.
	n := 0
	ParseDirents(b, func(Dirent) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("walk went on after false: %d calls", n)
	}
}

func TestParseDirentsBad(t *testing.T) {
	tooLong := dirent(1, 1, 8, "x")
	nativeEndian.PutUint32(tooLong[16:], fuseNameMax+1)
	zero := dirent(1, 1, 8, "x")
	nativeEndian.PutUint32(zero[16:], 0)
	for name, c := range map[string]struct {
		b       []byte
		wantErr bool
		entries int
	}{
		"slash in name":       {dirent(1, 1, 8, "a/b"), true, 0},
		"NUL in name":         {dirent(1, 1, 8, "a\x00b"), true, 0},
		"name length 0":       {zero, true, 0},
		"name length too big": {tooLong, true, 0},
		"cut in its header":   {concat(dirent(1, 1, 8, "a"), dirent(2, 2, 8, "b")[:10]), false, 1},
		"cut in its name":     {concat(dirent(1, 1, 8, "a"), dirent(2, 2, 8, "bcdefghijk")[:28]), false, 1},
		"bad after good":      {concat(dirent(1, 1, 8, "a"), dirent(2, 2, 8, "x/y")), true, 1},
		"empty":               {nil, false, 0},
	} {
		t.Run(name, func(t *testing.T) {
			n := 0
			err := ParseDirents(c.b, func(Dirent) bool { n++; return true })
			if (err != nil) != c.wantErr || n != c.entries {
				t.Fatalf("err %v, %d entries; want error %v, %d entries", err, n, c.wantErr, c.entries)
			}
			if err != nil && !errors.Is(err, syscall.EIO) {
				t.Errorf("error %v is not EIO", err)
			}
		})
	}
}

func TestParseDirentsPlus(t *testing.T) {
	b := seed(t, "direntsplus.bin", concat(direntPlus(0, 1, 1, 4, "."), direntPlus(5, 5, 2, 8, "f")))
	var got []DirentPlus
	if err := ParseDirentsPlus(b, func(d DirentPlus) bool { got = append(got, d); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Entry.NodeId != 5 || got[1].Name != "f" || got[1].Entry.Attr.Mode != 8<<12 || got[0].Entry.NodeId != 0 {
		t.Fatalf("got %+v", got)
	}
}

func notifyPayload(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case uint64:
			b = nativeEndian.AppendUint64(b, v)
		case uint32:
			b = nativeEndian.AppendUint32(b, v)
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		}
	}
	return b
}

func TestParseNotification(t *testing.T) {
	cases := []struct {
		code NotifyCode
		b    []byte
		want Notification
	}{
		{NotifyPoll, notifyPayload(uint64(77)), Notification{Code: NotifyPoll, Kh: 77}},
		{NotifyInvalInode, notifyPayload(uint64(5), uint64(10), uint64(20)), Notification{Code: NotifyInvalInode, Nodeid: 5, Off: 10, Len: 20}},
		{NotifyInvalEntry, notifyPayload(uint64(1), uint32(3), uint32(0), "abc\x00"), Notification{Code: NotifyInvalEntry, Parent: 1, Name: "abc"}},
		{NotifyDelete, notifyPayload(uint64(1), uint64(9), uint32(2), uint32(0), "xy\x00"), Notification{Code: NotifyDelete, Parent: 1, Child: 9, Name: "xy"}},
		{NotifyRetrieve, notifyPayload(uint64(3), uint64(4), uint64(0), uint32(100), uint32(0)), Notification{Code: NotifyRetrieve, NotifyUnique: 3, Nodeid: 4, Size: 100}},
		{NotifyResend, nil, Notification{Code: NotifyResend}},
	}
	for _, c := range cases {
		n, err := ParseNotification(c.code, c.b)
		if err != nil {
			t.Errorf("%s: %v", c.code, err)
			continue
		}
		if n.Code != c.want.Code || n.Kh != c.want.Kh || n.Nodeid != c.want.Nodeid || n.Parent != c.want.Parent ||
			n.Child != c.want.Child || n.Off != c.want.Off || n.Len != c.want.Len || n.Name != c.want.Name ||
			n.NotifyUnique != c.want.NotifyUnique || n.Size != c.want.Size {
			t.Errorf("%s: got %+v, want %+v", c.code, n, c.want)
		}
	}
	store, err := ParseNotification(NotifyStore, notifyPayload(uint64(4), uint64(8), uint32(3), uint32(0), "abc"))
	if err != nil || string(store.Data) != "abc" || store.Off != 8 {
		t.Errorf("STORE: %+v %v", store, err)
	}
	prune, err := ParseNotification(NotifyPrune, notifyPayload(uint32(2), uint32(0), uint64(0), uint64(11), uint64(12)))
	if err != nil || len(prune.Nodeids) != 2 || prune.Nodeids[1] != 12 {
		t.Errorf("PRUNE: %+v %v", prune, err)
	}
	for name, c := range map[string]struct {
		code NotifyCode
		b    []byte
	}{
		"unknown code":         {42, nil},
		"poll short":           {NotifyPoll, []byte{1, 2}},
		"inval entry no NUL":   {NotifyInvalEntry, notifyPayload(uint64(1), uint32(3), uint32(0), "abcd")},
		"inval entry too long": {NotifyInvalEntry, notifyPayload(uint64(1), uint32(1<<31), uint32(0), "a\x00")},
		"delete slash":         {NotifyDelete, notifyPayload(uint64(1), uint64(2), uint32(3), uint32(0), "a/b\x00")},
		"store size lies":      {NotifyStore, notifyPayload(uint64(4), uint64(8), uint32(1<<30), uint32(0), "abc")},
		"prune count lies":     {NotifyPrune, notifyPayload(uint32(1<<31), uint32(0), uint64(0), uint64(1))},
		"resend with payload":  {NotifyResend, []byte{1}},
	} {
		if _, err := ParseNotification(c.code, c.b); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("%s: err %v, want EPROTO", name, err)
		}
	}
}

func TestReplyErrno(t *testing.T) {
	for status, want := range map[int32]error{0: nil, -2: syscall.ENOENT, -511: syscall.Errno(511)} {
		if err := replyErrno(OpLookup, status); err != want {
			t.Errorf("status %d: %v, want %v", status, err, want)
		}
	}
	for _, status := range []int32{1, 5, -512, -4095, -1 << 31} {
		if err := replyErrno(OpLookup, status); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("status %d: %v, want EPROTO", status, err)
		}
	}
}

func TestDecodeSizes(t *testing.T) {
	full := make([]byte, entryOutSize)
	if _, err := decodeExact[fuse.EntryOut](OpLookup, full); err != nil {
		t.Error(err)
	}
	for _, n := range []int{0, 1, entryOutSize - 1, entryOutSize + 1} {
		if _, err := decodeExact[fuse.EntryOut](OpLookup, make([]byte, n)); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("%d bytes: %v, want EPROTO", n, err)
		}
	}
	// An old minor's 24-byte INIT_OUT decodes with the rest zero.
	b := notifyPayload(uint32(7), uint32(19), uint32(65536), uint32(3), uint32(0), uint32(131072))
	out, err := decodeAtLeast[fuse.InitOut](OpInit, b, 8)
	if err != nil || out.Minor != 19 || out.MaxWrite != 131072 || out.MaxPages != 0 {
		t.Errorf("compat INIT_OUT: %+v %v", out, err)
	}
}

func FuzzParseDirents(f *testing.F) {
	f.Add(seed(f, "dirents.bin", direntsSeed))
	f.Add(dirent(1, 1, 4, "a/b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseDirents(b, func(d Dirent) bool {
			if d.Name == "" || bytes.ContainsAny([]byte(d.Name), "/\x00") || len(d.Name) > fuseNameMax {
				t.Fatalf("bad entry accepted: %+v", d)
			}
			return true
		})
	})
}

func FuzzParseDirentsPlus(f *testing.F) {
	f.Add(seed(f, "direntsplus.bin", concat(direntPlus(0, 1, 1, 4, "."), direntPlus(5, 5, 2, 8, "f"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseDirentsPlus(b, func(d DirentPlus) bool {
			if d.Name == "" || bytes.ContainsAny([]byte(d.Name), "/\x00") {
				t.Fatalf("bad entry accepted: %+v", d)
			}
			return true
		})
	})
}

func FuzzParseNotification(f *testing.F) {
	f.Add(int32(NotifyInvalEntry), notifyPayload(uint64(1), uint32(3), uint32(0), "abc\x00"))
	f.Add(int32(NotifyStore), notifyPayload(uint64(4), uint64(8), uint32(3), uint32(0), "abc"))
	f.Add(int32(NotifyPrune), notifyPayload(uint32(1), uint32(0), uint64(0), uint64(11)))
	f.Add(int32(NotifyDelete), notifyPayload(uint64(1), uint64(9), uint32(2), uint32(0), "xy\x00"))
	f.Fuzz(func(t *testing.T, code int32, b []byte) {
		n, err := ParseNotification(NotifyCode(code), b)
		if err == nil && (n == nil || n.Code != NotifyCode(code)) {
			t.Fatalf("accepted %v with %+v", code, n)
		}
		if err != nil && !errors.Is(err, syscall.EPROTO) {
			t.Fatalf("error %v is not EPROTO", err)
		}
	})
}
