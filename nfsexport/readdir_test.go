package nfsexport

import (
	"fmt"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

// NFS READDIRPLUS is FUSE READDIRPLUS when the daemon took it at INIT:
// its entries' lookups serve the entries' handles, with no LOOKUP each.
// Without it, READDIR and a LOOKUP per entry.
func TestReaddirplusFromDaemon(t *testing.T) {
	const n = 20
	for _, plus := range []bool{true, false} {
		t.Run(fmt.Sprintf("readdirplus=%v", plus), func(t *testing.T) {
			dir := t.TempDir()
			files := map[string][]byte{}
			for i := range n {
				files[fmt.Sprintf("d/f%02d", i)] = []byte{byte(i)}
			}
			writeTree(t, dir, files)
			root, err := fs.NewLoopbackRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			conn := gofusepeer.ServeRawOptions(t, fs.NewNodeFS(root, &fs.Options{}), fuse.MountOptions{DisableReadDirPlus: !plus})
			u, err := perfuse.Attach(testCtx(t), conn, nil, perfuse.WithDiag(perfuse.DiagTrace))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.Unmount(testCtx(t)) })
			_, port := serve(t, u, Options{})
			v := dial(t, port, "/")
			got := names(t, v, "d")
			if len(got) != n {
				t.Fatalf("READDIRPLUS listed %d entries; want %d", len(got), n)
			}
			ents, _ := v.ReadDirPlus("d")
			for _, e := range ents {
				if e.Name() == "f07" && e.Size() != 1 {
					t.Errorf("f07: size %d", e.Size())
				}
			}
			count := map[perfuse.Opcode]int{}
			for _, s := range u.TraceStats() {
				count[s.Op] = s.Count
			}
			t.Logf("READDIRPLUS %d, READDIR %d, LOOKUP %d", count[perfuse.OpReaddirplus], count[perfuse.OpReaddir], count[perfuse.OpLookup])
			if plus && (count[perfuse.OpReaddirplus] == 0 || count[perfuse.OpReaddir] != 0 || count[perfuse.OpLookup] >= n) {
				t.Errorf("with READDIRPLUS: %d READDIRPLUS, %d READDIR, %d LOOKUP; want READDIRPLUS and fewer than %d LOOKUPs",
					count[perfuse.OpReaddirplus], count[perfuse.OpReaddir], count[perfuse.OpLookup], n)
			}
			if !plus && (count[perfuse.OpReaddir] == 0 || count[perfuse.OpLookup] < n) {
				t.Errorf("without READDIRPLUS: %d READDIR, %d LOOKUP; want READDIR and a LOOKUP per entry",
					count[perfuse.OpReaddir], count[perfuse.OpLookup])
			}
		})
	}
}
