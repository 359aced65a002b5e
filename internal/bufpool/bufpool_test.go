package bufpool

import "testing"

func TestSizeClasses(t *testing.T) {
	for _, n := range []int{0, 1, 64, 65, 120, 4096, 4097, 53248 + 16, 1 << 22} {
		b := Get(n)
		if len(b) != n || cap(b) < n || cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("Get(%d): len %d cap %d", n, len(b), cap(b))
		}
		Put(b)
	}
	if b := Get(1<<22 + 1); len(b) != 1<<22+1 {
		t.Fatalf("beyond the largest class: len %d", len(b))
	}
	Put(make([]byte, 100)) // not from Get: dropped, no panic
}

func TestReuseAllocatesNothing(t *testing.T) {
	Put(Get(120))
	if n := testing.AllocsPerRun(100, func() { Put(Get(120)) }); n > 0 {
		t.Errorf("%.1f allocations per Get/Put of a pooled size", n)
	}
}
