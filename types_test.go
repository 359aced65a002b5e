package perfuse

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A field of a struct, nested structs flattened: its path of names, its
// offset from the outermost struct, its size and its shape.
type leaf struct {
	name      string
	off, size uintptr
	shape     string
}

func leaves(t reflect.Type, base uintptr, prefix string) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, leaves(f.Type, base+f.Offset, prefix+f.Name+".")...)
			continue
		}
		shape := f.Type.Kind().String()
		if f.Type.Kind() == reflect.Array {
			shape = fmt.Sprintf("[%d]%s", f.Type.Len(), f.Type.Elem().Kind())
		}
		out = append(out, leaf{prefix + f.Name, base + f.Offset, f.Type.Size(), shape})
	}
	return out
}

// layoutDiff says how ours differs from theirs, "" when it does not:
// the same size and, field for field, the same name, offset, size and
// shape. The first skip bytes of theirs (go-fuse's in header on a
// request struct) and the name prefix of its fields there are left out.
func layoutDiff(ours, theirs reflect.Type, skip uintptr, prefix string) string {
	if ours.Size() != theirs.Size()-skip {
		return fmt.Sprintf("size %d, want %d", ours.Size(), theirs.Size()-skip)
	}
	var want []leaf
	for _, l := range leaves(theirs, 0, "") {
		if l.off >= skip {
			l.off -= skip
			l.name = strings.TrimPrefix(l.name, prefix)
			want = append(want, l)
		}
	}
	if got := leaves(ours, 0, ""); !slices.Equal(got, want) {
		return fmt.Sprintf("fields\n%v\nwant\n%v", got, want)
	}
	return ""
}

// The op table decodes the wire into its own types, and the kernel
// binding views them as go-fuse's in place (internal/kernel/convert.go):
// each must be go-fuse's struct field for field.
func TestLayout(t *testing.T) {
	for _, c := range []struct {
		ours, theirs any
		skip         uintptr
		prefix       string
	}{
		{Owner{}, fuse.Owner{}, 0, ""},
		{Attr{}, fuse.Attr{}, 0, ""},
		{AttrOut{}, fuse.AttrOut{}, 0, ""},
		{EntryOut{}, fuse.EntryOut{}, 0, ""},
		{createOut{}, fuse.CreateOut{}, 0, ""},
		{StatfsOut{}, fuse.StatfsOut{}, 0, ""},
		{SetAttrIn{}, fuse.SetAttrIn{}, uintptr(inHeaderSize), "SetAttrInCommon."},
		{FileLock{}, fuse.FileLock{}, 0, ""},
		{Caller{}, fuse.Caller{}, 0, ""},
		{InHeader{}, fuse.InHeader{}, 0, ""},
		{OutHeader{}, fuse.OutHeader{}, 0, ""},
	} {
		ours, theirs := reflect.TypeOf(c.ours), reflect.TypeOf(c.theirs)
		if d := layoutDiff(ours, theirs, c.skip, c.prefix); d != "" {
			t.Errorf("%v is not %v: %s", ours, theirs, d)
		}
	}
}

// layoutDiff sees a drift: fields swapped, renamed, resized or moved.
func TestLayoutDiffSeesDrift(t *testing.T) {
	type want struct {
		A uint64
		B uint32
		C uint32
	}
	for _, bad := range []any{
		struct {
			A    uint64
			C, B uint32
		}{},
		struct {
			A uint64
			B uint32
			D uint32
		}{},
		struct {
			A    uint64
			B, C uint16
		}{},
		struct {
			A    uint64
			B, C int32
		}{},
		struct {
			A uint64
			N struct{ B, C uint32 }
		}{},
	} {
		if layoutDiff(reflect.TypeOf(bad), reflect.TypeOf(want{}), 0, "") == "" {
			t.Errorf("%T passes as %T", bad, want{})
		}
	}
	if d := layoutDiff(reflect.TypeOf(want{}), reflect.TypeOf(want{}), 0, ""); d != "" {
		t.Errorf("a struct differs from itself: %s", d)
	}
}

// The flag bits are the kernel's, as go-fuse numbers them.
func TestFlagBits(t *testing.T) {
	for _, c := range []struct {
		name       string
		ours, want int
	}{
		{"FattrMode", FattrMode, fuse.FATTR_MODE},
		{"FattrUid", FattrUid, fuse.FATTR_UID},
		{"FattrGid", FattrGid, fuse.FATTR_GID},
		{"FattrSize", FattrSize, fuse.FATTR_SIZE},
		{"FattrAtime", FattrAtime, fuse.FATTR_ATIME},
		{"FattrMtime", FattrMtime, fuse.FATTR_MTIME},
		{"FattrFh", FattrFh, fuse.FATTR_FH},
		{"FattrAtimeNow", FattrAtimeNow, fuse.FATTR_ATIME_NOW},
		{"FattrMtimeNow", FattrMtimeNow, fuse.FATTR_MTIME_NOW},
		{"FattrLockowner", FattrLockowner, fuse.FATTR_LOCKOWNER},
		{"FattrCtime", FattrCtime, fuse.FATTR_CTIME},
		{"FattrKillSuidgid", FattrKillSuidgid, fuse.FATTR_KILL_SUIDGID},
		{"LkFlock", LkFlock, fuse.LK_FLOCK},
		{"CapAsyncRead", CapAsyncRead, fuse.CAP_ASYNC_READ},
		{"CapPosixLocks", CapPosixLocks, fuse.CAP_POSIX_LOCKS},
		{"CapAtomicOTrunc", CapAtomicOTrunc, fuse.CAP_ATOMIC_O_TRUNC},
		{"CapBigWrites", CapBigWrites, fuse.CAP_BIG_WRITES},
		{"CapDontMask", CapDontMask, fuse.CAP_DONT_MASK},
		{"CapFlockLocks", CapFlockLocks, fuse.CAP_FLOCK_LOCKS},
		{"CapReaddirplus", CapReaddirplus, fuse.CAP_READDIRPLUS},
		{"CapParallelDirops", CapParallelDirops, fuse.CAP_PARALLEL_DIROPS},
		{"CapMaxPages", CapMaxPages, fuse.CAP_MAX_PAGES},
	} {
		if c.ours != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.ours, c.want)
		}
	}
}
