package check

import (
	"fmt"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
)

// resumeBudget is how long resuming from offsets may take per case before
// the offsets are sampled instead of all tried.
const resumeBudget = 6 * time.Second

// bigDir returns the directory readdir is checked on, with the names it
// must hold (nil: whatever it holds, on a read-only daemon), made once.
func (r *runner) bigDir() (*perfuse.Node, string, map[string]bool, func(), error) {
	if r.scratch == nil {
		_, dir, n, err := r.regularFiles(0)
		if err != nil {
			return nil, "", nil, nil, fmt.Errorf("walking the tree: %w", err)
		}
		if dir == "." {
			return r.u.Root(), fmt.Sprintf("/ (%d entries; %s)", n, r.ro), nil, func() {}, nil
		}
		e, err := r.lookupPath(dir)
		if err != nil {
			return nil, "", nil, nil, err
		}
		return e.Node, fmt.Sprintf("/%s (%d entries; %s)", dir, n, r.ro), nil, func() { r.u.NodeReclaim(r.ctx, e.Node, 1) }, nil
	}
	if r.big == nil {
		e, err := r.mkdir(r.scratch, "big")
		if err != nil {
			return nil, "", nil, nil, err
		}
		r.big, r.bigNames = e.Node, map[string]bool{}
		for i := range r.opt.Entries {
			name := fmt.Sprintf("entry-%05d-%s", i, "abcdefghijklmnopqrstuvwxyz"[:i%27])
			if err := r.mknodFile(r.big, name); err != nil {
				return nil, "", nil, nil, fmt.Errorf("making entry %d: %w", i, err)
			}
			r.bigNames[name] = true
		}
	}
	return r.big, fmt.Sprintf("%d entries made", len(r.bigNames)), r.bigNames, func() {}, nil
}

// mknodFile makes an empty regular file, by MKNOD or else CREATE.
func (r *runner) mknodFile(dir *perfuse.Node, name string) error {
	if !r.noMknod {
		e, err := r.u.NodeMknod(r.ctx, nil, dir, name, syscall.S_IFREG|0o644, 0, 0o022)
		if err == nil {
			r.u.NodeReclaim(r.ctx, e.Node, 1)
			return nil
		}
		if !unsupported(err) {
			return fmt.Errorf("MKNOD %s: %w", name, err)
		}
		r.noMknod = true
	}
	e, h, err := r.create(dir, name)
	if err != nil {
		return err
	}
	r.done(e, h)
	return nil
}

// readdirCase lists a large directory, checks no entry is lost or
// repeated, and resumes from every offset the daemon returned (sampled
// when that would take too long), checking each resumes at the entry
// after the one the offset came with.
func (r *runner) readdirCase(plus bool) outcome {
	op := "READDIR"
	if plus {
		op = "READDIRPLUS"
		if _, flags, _, _ := r.u.Negotiated(); flags&perfuse.CapReaddirplus == 0 {
			return skip("READDIRPLUS not taken at INIT")
		}
	}
	if r.scratchErr != nil {
		return fail("%s", r.ro)
	}
	dir, label, want, done, err := r.bigDir()
	if err != nil {
		return fail("%v", err)
	}
	defer done()
	h, err := r.u.NodeOpen(r.ctx, nil, dir, syscall.O_RDONLY)
	if err != nil {
		return fail("OPENDIR: %v", err)
	}
	defer r.u.NodeRelease(r.ctx, h)
	// read lists from off; with one set, only the first entry.
	read := func(off uint64, one bool) ([]perfuse.Dirent, error) {
		var got []perfuse.Dirent
		var err error
		if plus {
			err = r.u.NodeReaddirplus(r.ctx, nil, h, off, func(d perfuse.DirentPlus) bool {
				got = append(got, d.Dirent)
				if one {
					return false // refused: the op table forgets its lookup
				}
				if d.Node != nil {
					r.u.NodeReclaim(r.ctx, d.Node, 1)
				}
				return true
			})
		} else {
			err = r.u.NodeReaddir(r.ctx, nil, h, off, func(d perfuse.Dirent) bool {
				got = append(got, d)
				return !one
			})
		}
		if err != nil {
			return nil, fmt.Errorf("%s from offset %d: %w", op, off, err)
		}
		return got, nil
	}
	list, err := read(0, false)
	if err != nil {
		return fail("%v", err)
	}
	seen := map[string]bool{}
	for _, d := range list {
		if seen[d.Name] {
			return fail("%s: %q listed twice", op, d.Name)
		}
		seen[d.Name] = true
		if d.Off == 0 {
			return fail("%s: %q has offset 0, which restarts the listing", op, d.Name)
		}
	}
	for name := range want {
		if !seen[name] {
			return fail("%s: %q not listed (%d of %d listed)", op, name, len(list), len(want)+2)
		}
	}
	if want != nil {
		for name := range seen {
			if !want[name] && name != "." && name != ".." {
				return fail("%s: %q listed, never made", op, name)
			}
		}
	}
	// Resume from each offset: the first entry must be the next one.
	step, tried := 1, 0
	start := time.Now()
	for i := 0; i < len(list); i += step {
		got, err := read(list[i].Off, true)
		if err != nil {
			return fail("%v", err)
		}
		switch {
		case i == len(list)-1 && len(got) != 0:
			return fail("%s from the last offset %d gave %q, want the end", op, list[i].Off, got[0].Name)
		case i < len(list)-1 && (len(got) == 0 || got[0].Name != list[i+1].Name):
			g := "the end"
			if len(got) > 0 {
				g = fmt.Sprintf("%q", got[0].Name)
			}
			return fail("%s from offset %d (after %q) gave %s, want %q", op, list[i].Off, list[i].Name, g, list[i+1].Name)
		}
		tried++
		if tried == 100 && step == 1 {
			if per := time.Since(start) / 100; per*time.Duration(len(list)) > resumeBudget {
				step = int(per*time.Duration(len(list))/resumeBudget) + 1
			}
		}
		if step > 1 && i+step >= len(list) && i != len(list)-1 {
			i = len(list) - 1 - step // the last offset is always tried
		}
	}
	how := fmt.Sprintf("every one of the %d offsets", len(list))
	if step > 1 {
		how = fmt.Sprintf("%d of the %d offsets (1 in %d after the first 100: all would take over %v)", tried, len(list), step, resumeBudget)
	}
	return pass("%s: %d entries, none lost or repeated; resumed from %s", label, len(list), how)
}
