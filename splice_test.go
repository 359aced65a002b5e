package perfuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

// A go-fuse daemon at its defaults splices READ replies, and concurrent
// ones interleave their pieces. Reads are asked in pieces that fit one
// record, so 8 concurrent readers of 4 MiB files get every byte right, 5
// rounds over, and the connection never fails.
func TestSplicingGoFuseConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	const files, size = 8, 4 << 20
	want := make([][]byte, files)
	for i := range want {
		want[i] = make([]byte, size)
		r := rand.New(rand.NewPCG(uint64(i), 7))
		for j := range want[i] {
			want[i][j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), want[i], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := attach(t, gofusepeer.ServeLoopbackSplicing(t, dir))
	ctx := testCtx(t)
	// Odd read sizes and offsets: pieces at every alignment.
	chunks := []int{1 << 20, 128 << 10, 200001, 4097}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, files)
		for i := range files {
			wg.Go(func() {
				e, err := u.NodeLookup(ctx, nil, u.Root(), fmt.Sprint(i))
				if err != nil {
					errs <- err
					return
				}
				defer u.NodeReclaim(ctx, e.Node, 1)
				h, err := u.NodeOpen(ctx, nil, e.Node, os.O_RDONLY)
				if err != nil {
					errs <- err
					return
				}
				defer u.NodeRelease(ctx, h)
				got := make([]byte, 0, size)
				buf := make([]byte, 1<<20)
				chunk := chunks[(i+round)%len(chunks)]
				for len(got) < size {
					n, err := u.NodeRead(ctx, nil, h, buf[:chunk], int64(len(got)))
					if err != nil {
						errs <- fmt.Errorf("file %d at %d: %w", i, len(got), err)
						return
					}
					if n == 0 {
						break
					}
					got = append(got, buf[:n]...)
				}
				if !bytes.Equal(got, want[i]) {
					errs <- fmt.Errorf("file %d: %d bytes read, differing from the source", i, len(got))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// A Go stand-in for fsstress -p 4, mount-free on the splicing go-fuse
// loopback: four workers create, write at random offsets, read back,
// truncate, rename and remove their own files, each checked against an
// in-memory model of its contents.
func TestSplicingGoFuseStress(t *testing.T) {
	dir := t.TempDir()
	u := attach(t, gofusepeer.ServeLoopbackSplicing(t, dir))
	ctx := testCtx(t)
	const workers, ops = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			if err := stressWorker(u, ctx, w, ops); err != nil {
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

func stressWorker(u *Usermount, ctx context.Context, w, ops int) error {
	r := rand.New(rand.NewPCG(uint64(w), 99))
	model := map[string][]byte{}
	name := func(i int) string { return fmt.Sprintf("w%d-%d", w, i) }
	open := func(n string) (*Entry, *Handle, error) {
		e, err := u.NodeLookup(ctx, nil, u.Root(), n)
		if err != nil {
			return nil, nil, err
		}
		h, err := u.NodeOpen(ctx, nil, e.Node, os.O_RDWR)
		if err != nil {
			u.NodeReclaim(ctx, e.Node, 1)
			return nil, nil, err
		}
		return e, h, nil
	}
	done := func(e *Entry, h *Handle) {
		u.NodeRelease(ctx, h)
		u.NodeReclaim(ctx, e.Node, 1)
	}
	for op := range ops {
		n := name(r.IntN(6))
		data, exists := model[n]
		switch k := r.IntN(6); {
		case !exists:
			e, h, err := u.NodeCreate(ctx, nil, u.Root(), n, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644, 0)
			if err != nil {
				return fmt.Errorf("op %d create %s: %w", op, n, err)
			}
			done(e, h)
			model[n] = []byte{}
		case k <= 1: // write
			off := r.IntN(len(data) + 100000)
			p := make([]byte, 1+r.IntN(300000))
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			e, h, err := open(n)
			if err != nil {
				return fmt.Errorf("op %d open %s: %w", op, n, err)
			}
			got, err := u.NodeWrite(ctx, nil, h, p, int64(off), 0, 0)
			done(e, h)
			if err != nil || got != len(p) {
				return fmt.Errorf("op %d write %d at %d of %s: %d, %w", op, len(p), off, n, got, err)
			}
			if end := off + len(p); end > len(data) {
				data = append(data, make([]byte, end-len(data))...)
			}
			copy(data[off:], p)
			model[n] = data
		case k == 2: // read back a random range
			off := r.IntN(len(data) + 1)
			size := 1 + r.IntN(400000)
			e, h, err := open(n)
			if err != nil {
				return fmt.Errorf("op %d open %s: %w", op, n, err)
			}
			buf := make([]byte, size)
			got, err := u.NodeRead(ctx, nil, h, buf, int64(off))
			done(e, h)
			if err != nil {
				return fmt.Errorf("op %d read %s: %w", op, n, err)
			}
			want := data[off:min(len(data), off+size)]
			if !bytes.Equal(buf[:got], want) {
				return fmt.Errorf("op %d read %d at %d of %s: %d bytes, differing from the model's %d", op, size, off, n, got, len(want))
			}
		case k == 3: // truncate
			size := r.IntN(len(data) + 50000)
			e, err := u.NodeLookup(ctx, nil, u.Root(), n)
			if err != nil {
				return err
			}
			_, err = u.NodeSetattr(ctx, nil, e.Node, nil, &SetAttrIn{Valid: FattrSize, Size: uint64(size)})
			u.NodeReclaim(ctx, e.Node, 1)
			if err != nil {
				return fmt.Errorf("op %d truncate %s: %w", op, n, err)
			}
			if size <= len(data) {
				data = data[:size]
			} else {
				data = append(data, make([]byte, size-len(data))...)
			}
			model[n] = data
		case k == 4: // rename over another of ours
			to := name(r.IntN(6))
			if to == n {
				continue
			}
			if err := u.NodeRename(ctx, nil, u.Root(), n, u.Root(), to, 0); err != nil {
				return fmt.Errorf("op %d rename %s %s: %w", op, n, to, err)
			}
			model[to] = data
			delete(model, n)
		default: // remove
			if err := u.NodeRemove(ctx, nil, u.Root(), n); err != nil {
				return fmt.Errorf("op %d remove %s: %w", op, n, err)
			}
			delete(model, n)
			if _, err := u.NodeLookup(ctx, nil, u.Root(), n); err == nil || !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("op %d: %s still there after remove: %v", op, n, err)
			}
		}
	}
	return nil
}
