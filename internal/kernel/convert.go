package kernel

import (
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
)

// The one place where go-fuse's structs, which the kernel side hands us,
// meet the op table's own (package perfuse). Both are the kernel's
// structs with the same fields in the same places (perfuse's TestLayout
// holds every pair to it), so a struct with nested members is viewed as
// the other in place; a flat one converts as Go allows.

func entryOut(e *perfuse.EntryOut) *fuse.EntryOut { return (*fuse.EntryOut)(unsafe.Pointer(e)) }

func attrOut(a *perfuse.AttrOut) *fuse.AttrOut { return (*fuse.AttrOut)(unsafe.Pointer(a)) }

func statfsOut(st *perfuse.StatfsOut) fuse.StatfsOut { return fuse.StatfsOut(*st) }

// setAttrIn is in's fixed part, after its in header.
func setAttrIn(in *fuse.SetAttrIn) perfuse.SetAttrIn {
	return *(*perfuse.SetAttrIn)(unsafe.Pointer(&in.Valid))
}

func fileLock(lk fuse.FileLock) perfuse.FileLock { return perfuse.FileLock(lk) }

func wireLock(lk perfuse.FileLock) fuse.FileLock { return fuse.FileLock(lk) }
