package check

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sync"
	"syscall"
)

// oddIO writes, reads and truncates at odd sizes and offsets, checked
// against a copy kept here. On a read-only daemon it reads the tree's
// files at odd offsets and checks them against whole reads.
func (r *runner) oddIO() outcome {
	if r.scratch == nil {
		return r.oddReads()
	}
	e, h, err := r.create(r.scratch, "odd")
	if err != nil {
		return fail("%v", err)
	}
	defer r.unlink(r.scratch, "odd")
	defer r.done(e, h)
	var model []byte
	steps := []struct{ off, n int }{
		{0, 1}, {1, 7}, {4093, 4099}, {65535, 1}, {131071, 65539}, {1<<20 - 3, 12289}, {5, 3}, {300001, 0},
	}
	for _, s := range steps {
		data := pattern(s.off, s.off, s.n)
		if err := r.writeAll(h, data, int64(s.off)); err != nil {
			return fail("%v", err)
		}
		model = put(model, data, s.off)
	}
	check := func(what string) *outcome {
		back, err := r.readAt(h, 0, len(model)+4096)
		if err != nil {
			o := fail("%s: %v", what, err)
			return &o
		}
		if i := firstDiff(back, model); i >= 0 {
			o := fail("%s: read %d bytes, want %d; first difference at byte %d", what, len(back), len(model), i)
			return &o
		}
		a, err := r.getattr(e.Node)
		if err == nil && a.Size != uint64(len(model)) {
			err = fmt.Errorf("GETATTR size %d, want %d", a.Size, len(model))
		}
		if err != nil {
			o := fail("%s: %v", what, err)
			return &o
		}
		return nil
	}
	if o := check("after writes with holes"); o != nil {
		return *o
	}
	for _, size := range []int{777777, 4097, 1, 70001} {
		if err := r.truncate(e.Node, h, int64(size)); err != nil {
			return fail("%v", err)
		}
		model = resize(model, size)
		if o := check(fmt.Sprintf("after truncate to %d", size)); o != nil {
			return *o
		}
	}
	// A read at each odd offset and size, against the model.
	for _, s := range [][2]int{{0, 3}, {4095, 2}, {4096, 4097}, {69999, 10}, {70001, 5}, {1 << 20, 9}} {
		got, err := r.readAt(h, int64(s[0]), s[1])
		if err != nil {
			return fail("%v", err)
		}
		want := window(model, s[0], s[1])
		if !bytes.Equal(got, want) {
			return fail("READ %d at %d: %d bytes, want %d", s[1], s[0], len(got), len(want))
		}
	}
	return pass("%d writes with holes, 4 truncates up and down, reads across page edges", len(steps))
}

// oddReads is oddIO for a read-only daemon.
func (r *runner) oddReads() outcome {
	files, _, _, err := r.regularFiles(50)
	if err != nil {
		return fail("walking the tree: %v", err)
	}
	if len(files) == 0 {
		return outcome{Skip, "no regular files to read (" + r.ro + ")"}
	}
	fsys := r.u.FS(r.ctx, nil)
	reads := 0
	var pastEnd []string
	for _, name := range files {
		whole, err := fs.ReadFile(fsys, name)
		if err != nil {
			return fail("%v", err)
		}
		e, err := r.lookupPath(name)
		if err != nil {
			return fail("%v", err)
		}
		h, err := r.u.NodeOpen(r.ctx, nil, e.Node, syscall.O_RDONLY)
		if err != nil {
			r.u.NodeReclaim(r.ctx, e.Node, 1)
			return fail("OPEN %s: %v", name, err)
		}
		// Linux reads within the size it knows: past the end is noted.
		if _, err := r.readAt(h, int64(len(whole)+4096), 7); err != nil && len(pastEnd) < 3 {
			pastEnd = append(pastEnd, fmt.Sprintf("%s: %s", name, errName(err)))
		}
		for _, s := range [][2]int{{0, 1}, {1, 4095}, {4095, 4097}, {len(whole) - 1, 3}} {
			if s[0] < 0 || s[0] >= len(whole) {
				continue
			}
			got, err := r.readAt(h, int64(s[0]), s[1])
			if err == nil && !bytes.Equal(got, window(whole, s[0], s[1])) {
				err = fmt.Errorf("READ %d at %d gave %d bytes, differing from the whole file's", s[1], s[0], len(got))
			}
			if err != nil {
				r.done(e, h)
				return fail("%s: %v", name, err)
			}
			reads++
		}
		r.done(e, h)
	}
	note := ""
	if len(pastEnd) > 0 {
		note = "; a READ past the end of file fails (" + join(pastEnd) + "), where POSIX reads 0 bytes"
	}
	return pass("%s: %d reads at odd offsets of %d files agree with whole reads%s", r.ro, reads, len(files), note)
}

// fsx runs a seeded random sequence of writes, reads, truncates, getattrs
// and reopens on one file, every read and size checked against a model.
func (r *runner) fsx() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	rng := rand.New(rand.NewPCG(r.opt.Seed, 0x9e3779b97f4a7c15))
	e, h, err := r.create(r.scratch, "fsx")
	if err != nil {
		return fail("%v", err)
	}
	defer func() { r.unlink(r.scratch, "fsx") }()
	defer func() { r.done(e, h) }()
	const maxLen = 1 << 20
	var model []byte
	counts := map[string]int{}
	for i := 0; i < r.opt.Ops; i++ {
		if err := r.ctx.Err(); err != nil {
			return fail("op %d: %v", i, err)
		}
		off := rng.IntN(maxLen)
		n := 1 + rng.IntN(1<<rng.IntN(17))
		var op string
		switch k := rng.IntN(100); {
		case k < 40:
			op = "write"
			n = min(n, maxLen-off)
			data := pattern(i, off, n)
			if err := r.writeAll(h, data, int64(off)); err != nil {
				return fail("op %d (seed %d): %v", i, r.opt.Seed, err)
			}
			model = put(model, data, off)
		case k < 80:
			op = "read"
			if len(model) > 0 && rng.IntN(2) == 0 {
				off = rng.IntN(len(model)) // mostly inside the file
			}
			got, err := r.readAt(h, int64(off), n)
			if err != nil {
				return fail("op %d (seed %d): %v", i, r.opt.Seed, err)
			}
			if want := window(model, off, n); !bytes.Equal(got, want) {
				return fail("op %d (seed %d): READ %d at %d of a %d-byte file: %d bytes, first difference at %d",
					i, r.opt.Seed, n, off, len(model), len(got), firstDiff(got, want))
			}
		case k < 90:
			op = "truncate"
			size := rng.IntN(maxLen)
			if rng.IntN(3) == 0 {
				size = rng.IntN(len(model) + 1)
			}
			if err := r.truncate(e.Node, h, int64(size)); err != nil {
				return fail("op %d (seed %d): %v", i, r.opt.Seed, err)
			}
			model = resize(model, size)
		case k < 97:
			op = "getattr"
			a, err := r.getattr(e.Node)
			if err != nil {
				return fail("op %d: %v", i, err)
			}
			if a.Size != uint64(len(model)) {
				return fail("op %d (seed %d): GETATTR size %d, want %d", i, r.opt.Seed, a.Size, len(model))
			}
		default:
			op = "reopen"
			if err := r.u.NodeClose(r.ctx, nil, h, 0); err != nil {
				h = nil
				return fail("op %d: close: %v", i, err)
			}
			if h, err = r.u.NodeOpen(r.ctx, nil, e.Node, syscall.O_RDWR); err != nil {
				h = nil
				return fail("op %d: OPEN: %v", i, err)
			}
		}
		counts[op]++
	}
	return pass("seed %d: %d ops (%d writes, %d reads, %d truncates, %d getattrs, %d reopens), final size %d",
		r.opt.Seed, r.opt.Ops, counts["write"], counts["read"], counts["truncate"], counts["getattr"], counts["reopen"], len(model))
}

// concurrency runs 16 goroutines, each on a file of its own.
func (r *runner) concurrency() outcome {
	if r.scratch == nil {
		return r.concurrentReads()
	}
	const workers = 16
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { errs[w] = r.worker(w) })
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			return fail("worker %d: %v", w, err)
		}
	}
	return pass("%d goroutines each created, wrote 200 KiB in odd chunks, read back, truncated and removed a file", workers)
}

func (r *runner) worker(w int) error {
	name := fmt.Sprintf("conc%02d", w)
	e, h, err := r.create(r.scratch, name)
	if err != nil {
		return err
	}
	defer r.done(e, h)
	data := pattern(w, 0, 200<<10)
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1000+w*997)
		if err := r.writeAll(h, data[off:off+n], int64(off)); err != nil {
			return err
		}
		off += n
	}
	got, err := r.readAt(h, 0, len(data)+1)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("read back %d bytes, differing from the %d written at byte %d", len(got), len(data), firstDiff(got, data))
	}
	if err := r.truncate(e.Node, h, 1001); err != nil {
		return err
	}
	if a, err := r.getattr(e.Node); err != nil || a.Size != 1001 {
		return fmt.Errorf("size after truncate %d: %v", a.Size, err)
	}
	if err := r.unlink(r.scratch, name); err != nil {
		return fmt.Errorf("UNLINK %s: %w", name, err)
	}
	return nil
}

// concurrentReads is concurrency for a read-only daemon: 16 goroutines
// read the tree's files at once, each checked against a whole read.
func (r *runner) concurrentReads() outcome {
	files, _, _, err := r.regularFiles(16)
	if err != nil {
		return fail("walking the tree: %v", err)
	}
	if len(files) == 0 {
		return outcome{Skip, "no regular files to read (" + r.ro + ")"}
	}
	fsys := r.u.FS(r.ctx, nil)
	want := make([][]byte, len(files))
	for i, f := range files {
		if want[i], err = fs.ReadFile(fsys, f); err != nil {
			return fail("%v", err)
		}
	}
	const workers = 16
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range 4 {
				i := (w + k) % len(files)
				got, err := fs.ReadFile(fsys, files[i])
				if err == nil && !bytes.Equal(got, want[i]) {
					err = fmt.Errorf("%s read differently", files[i])
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			return fail("goroutine %d: %v", w, err)
		}
	}
	return pass("%s: %d goroutines read %d files at once, 4 each, all as read alone", r.ro, workers, len(files))
}

// put writes data at off into model, growing it with zeros.
func put(model, data []byte, off int) []byte {
	if end := off + len(data); end > len(model) {
		model = resize(model, end)
	}
	copy(model[off:], data)
	return model
}

// resize truncates or extends model with zeros.
func resize(model []byte, size int) []byte {
	if size <= len(model) {
		return model[:size]
	}
	return append(model, make([]byte, size-len(model))...)
}

// window is what a read of n bytes at off returns from model.
func window(model []byte, off, n int) []byte {
	if off >= len(model) {
		return []byte{}
	}
	return model[off:min(off+n, len(model))]
}

// firstDiff is the first index where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
