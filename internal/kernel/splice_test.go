package kernel_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"golang.org/x/sys/unix"
)

// The go-fuse loopback at its defaults splices READ replies. Through the
// relay, 8 processes' worth of concurrent 4 MiB reads (buffered and
// O_DIRECT) compare equal to the source, 5 rounds over, and the mount
// stays up: before pieces were sized to one record, 4 of 8 completed and
// the rest hung in D state.
func TestRelaySplicingGoFuseConcurrentReads(t *testing.T) {
	kerneltest.NeedMount(t)
	src := t.TempDir()
	const files, size = 8, 4 << 20
	want := make([][]byte, files)
	for i := range want {
		want[i] = make([]byte, size)
		r := rand.New(rand.NewPCG(uint64(i), 3))
		for j := range want[i] {
			want[i][j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(src, fmt.Sprint(i)), want[i], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := kerneltest.Mount(t, gofusepeer.ServeLoopbackSplicing(t, src), kernel.Config{})
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, files)
		for i := range files {
			wg.Go(func() {
				name := filepath.Join(r.Dir, fmt.Sprint(i))
				got, err := readAll(name, (i+round)%2 == 1)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want[i]) {
					errs <- fmt.Errorf("%s: %d bytes, differing from the source", name, len(got))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		// Drop the page cache, so the next round reads the daemon again.
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
			t.Logf("drop_caches: %v", err)
		}
	}
	select {
	case err := <-r.MainErr:
		t.Fatalf("session ended: %v", err)
	default:
	}
}

// readAll reads name, with O_DIRECT in 1 MiB reads if direct.
func readAll(name string, direct bool) ([]byte, error) {
	if !direct {
		return os.ReadFile(name)
	}
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// O_DIRECT wants an aligned buffer: take a page-aligned slice.
	raw := make([]byte, 1<<20+4096)
	buf := raw[4096-int(uintptrOf(raw)%4096):][:1<<20]
	var out []byte
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return nil, fmt.Errorf("%s: O_DIRECT read at %d: %w", name, len(out), err)
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// A Go stand-in for fsstress -p 4 through the relay on the splicing
// loopback: four workers write at random offsets, read back, truncate,
// rename and remove their own files with ordinary system calls, each
// checked against an in-memory model.
func TestRelaySplicingGoFuseStress(t *testing.T) {
	kerneltest.NeedMount(t)
	src := t.TempDir()
	r := kerneltest.Mount(t, gofusepeer.ServeLoopbackSplicing(t, src), kernel.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			if err := stress(r.Dir, w, 300); err != nil {
				errs <- fmt.Errorf("worker %d: %w", w, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func stress(dir string, w, ops int) error {
	r := rand.New(rand.NewPCG(uint64(w), 5))
	model := map[string][]byte{}
	for op := range ops {
		n := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, r.IntN(6)))
		data, exists := model[n]
		switch k := r.IntN(6); {
		case !exists:
			if err := os.WriteFile(n, nil, 0o644); err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			model[n] = []byte{}
		case k <= 1:
			off := r.IntN(len(data) + 100000)
			p := make([]byte, 1+r.IntN(300000))
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			f, err := os.OpenFile(n, os.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			_, err = f.WriteAt(p, int64(off))
			f.Close()
			if err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			if end := off + len(p); end > len(data) {
				data = append(data, make([]byte, end-len(data))...)
			}
			copy(data[off:], p)
			model[n] = data
		case k == 2:
			got, err := os.ReadFile(n)
			if err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			if !bytes.Equal(got, data) {
				return fmt.Errorf("op %d: %s: %d bytes, differing from the model's %d", op, n, len(got), len(data))
			}
		case k == 3:
			size := r.IntN(len(data) + 50000)
			if err := os.Truncate(n, int64(size)); err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			if size <= len(data) {
				data = data[:size]
			} else {
				data = append(data, make([]byte, size-len(data))...)
			}
			model[n] = data
		case k == 4:
			to := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, r.IntN(6)))
			if to == n {
				continue
			}
			if err := os.Rename(n, to); err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			model[to] = data
			delete(model, n)
		default:
			if err := os.Remove(n); err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
			delete(model, n)
		}
	}
	return nil
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
