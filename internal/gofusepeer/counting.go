package gofusepeer

import (
	"fmt"
	"sort"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Counting wraps a go-fuse RawFileSystem and keeps the books a FUSE client
// must balance: the lookups it was handed per nodeid (every successful
// LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK and READDIRPLUS entry with a
// nodeid) against the FORGETs it sent, and each open file handle against
// its RELEASE. Serve it with ServeRaw.
//
// The counts are taken before go-fuse sends the reply, so a client's
// FORGET or RELEASE can never be seen before the entry or open it answers.
type Counting struct {
	fuse.RawFileSystem

	mu       sync.Mutex
	lookups  map[uint64]uint64 // nodeid → lookups handed out, not yet forgotten
	entries  int               // entries handed out in all
	forgets  int               // nlookup forgotten in all
	open     map[handle]int    // open handles → how many opens hold them
	opens    int
	releases int
	problems []string
}

type handle struct {
	fh  uint64
	dir bool
}

// NewCounting wraps fs.
func NewCounting(fs fuse.RawFileSystem) *Counting {
	return &Counting{RawFileSystem: fs, lookups: map[uint64]uint64{}, open: map[handle]int{}}
}

func (c *Counting) entry(status fuse.Status, out *fuse.EntryOut) {
	if status != fuse.OK || out.NodeId == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups[out.NodeId]++
	c.entries++
}

func (c *Counting) opened(status fuse.Status, fh uint64, dir bool) {
	if status != fuse.OK {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open[handle{fh, dir}]++
	c.opens++
}

func (c *Counting) released(fh uint64, dir bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releases++
	k := handle{fh, dir}
	if c.open[k] == 0 {
		c.problems = append(c.problems, fmt.Sprintf("RELEASE of fh %d (dir %v), which is not open", fh, dir))
		return
	}
	if c.open[k]--; c.open[k] == 0 {
		delete(c.open, k)
	}
}

func (c *Counting) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	s := c.RawFileSystem.Lookup(cancel, h, name, out)
	c.entry(s, out)
	return s
}

func (c *Counting) Forget(nodeid, nlookup uint64) {
	c.mu.Lock()
	switch {
	case nodeid == fuse.FUSE_ROOT_ID:
		c.problems = append(c.problems, fmt.Sprintf("FORGET of the root, nlookup %d", nlookup))
	case c.lookups[nodeid] < nlookup:
		c.problems = append(c.problems, fmt.Sprintf("FORGET of nodeid %d, nlookup %d: only %d held", nodeid, nlookup, c.lookups[nodeid]))
		delete(c.lookups, nodeid)
	default:
		if c.lookups[nodeid] -= nlookup; c.lookups[nodeid] == 0 {
			delete(c.lookups, nodeid)
		}
	}
	c.forgets += int(nlookup)
	c.mu.Unlock()
	c.RawFileSystem.Forget(nodeid, nlookup)
}

func (c *Counting) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	s := c.RawFileSystem.Mknod(cancel, in, name, out)
	c.entry(s, out)
	return s
}

func (c *Counting) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	s := c.RawFileSystem.Mkdir(cancel, in, name, out)
	c.entry(s, out)
	return s
}

func (c *Counting) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	s := c.RawFileSystem.Symlink(cancel, h, target, name, out)
	c.entry(s, out)
	return s
}

func (c *Counting) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	s := c.RawFileSystem.Link(cancel, in, name, out)
	c.entry(s, out)
	return s
}

func (c *Counting) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	s := c.RawFileSystem.Create(cancel, in, name, out)
	c.entry(s, &out.EntryOut)
	c.opened(s, out.Fh, false)
	return s
}

func (c *Counting) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	s := c.RawFileSystem.Open(cancel, in, out)
	c.opened(s, out.Fh, false)
	return s
}

func (c *Counting) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	s := c.RawFileSystem.OpenDir(cancel, in, out)
	c.opened(s, out.Fh, true)
	return s
}

func (c *Counting) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	c.released(in.Fh, false)
	c.RawFileSystem.Release(cancel, in)
}

func (c *Counting) ReleaseDir(in *fuse.ReleaseIn) {
	c.released(in.Fh, true)
	c.RawFileSystem.ReleaseDir(in)
}

// ReadDirPlus counts the entries with a nodeid in the reply go-fuse built.
func (c *Counting) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s := c.RawFileSystem.ReadDirPlus(cancel, in, out)
	if s != fuse.OK {
		return s
	}
	_, entries, err := fuse.ParseDirLookupEntries(out.Bytes())
	if err != nil {
		c.mu.Lock()
		c.problems = append(c.problems, fmt.Sprintf("READDIRPLUS reply unparsable: %v", err))
		c.mu.Unlock()
	}
	for i := range entries {
		c.entry(fuse.OK, &entries[i])
	}
	return s
}

// Report says what is out of balance: nodeids with lookups not forgotten,
// handles not released, and every over-forget or unknown release seen.
// Entries and Forgets give the totals.
func (c *Counting) Report() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]string(nil), c.problems...)
	var ids []uint64
	for id := range c.lookups {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		out = append(out, fmt.Sprintf("nodeid %d: %d lookups never forgotten", id, c.lookups[id]))
	}
	for h, n := range c.open {
		out = append(out, fmt.Sprintf("fh %d (dir %v): %d opens never released", h.fh, h.dir, n))
	}
	return out
}

// Totals returns the entries handed out, the lookups forgotten, the opens
// and the releases seen so far.
func (c *Counting) Totals() (entries, forgets, opens, releases int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries, c.forgets, c.opens, c.releases
}
