// Package bufpool keeps byte buffers by size class, so that the frames of
// each exchange reuse memory instead of allocating it: one pool per power
// of two from 64 bytes to 4 MiB.
package bufpool

import (
	"math/bits"
	"sync"
	"unsafe"
)

const (
	minShift = 6  // 64 bytes
	maxShift = 22 // 4 MiB
)

var pools [maxShift - minShift + 1]sync.Pool

// class returns the index of the smallest class that holds n bytes, or -1
// when n is beyond the largest.
func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	c := bits.Len(uint(n-1)) - minShift
	if c >= len(pools) {
		return -1
	}
	return c
}

// Get returns a buffer of n bytes (its contents are not zeroed). One
// beyond the largest class is allocated, and Put drops it.
func Get(n int) []byte {
	c := class(n)
	if c < 0 {
		return make([]byte, n)
	}
	size := 1 << (c + minShift)
	// The pools hold the arrays' addresses: a pointer goes into an
	// interface without an allocation, a slice header would not.
	if p, _ := pools[c].Get().(unsafe.Pointer); p != nil {
		return unsafe.Slice((*byte)(p), size)[:n]
	}
	return make([]byte, n, size)
}

// Put returns b, which Get returned, for reuse. b must not be used after.
func Put(b []byte) {
	c := cap(b)
	if c == 0 || c&(c-1) != 0 || c < 1<<minShift || c > 1<<maxShift {
		return // not one of ours
	}
	pools[bits.Len(uint(c))-1-minShift].Put(unsafe.Pointer(unsafe.SliceData(b[:1])))
}
