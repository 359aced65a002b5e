package nfsexport

import (
	"testing"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

// go-nfs answers every WRITE as FILE_SYNC: each is fsynced in the daemon
// before the reply.
func TestWritesAreSynced(t *testing.T) {
	dir := t.TempDir()
	u, err := perfuse.Attach(testCtx(t), gofusepeer.ServeLoopback(t, dir), nil, perfuse.WithDiag(perfuse.DiagTrace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Unmount(testCtx(t)) })
	s, port := serve(t, u, Options{})
	defer balanced(t, u, s)
	v := dial(t, port, "/")
	f, err := v.OpenFile("f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const writes = 3
	for range writes {
		if _, err := f.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	count := map[perfuse.Opcode]int{}
	for _, st := range u.TraceStats() {
		count[st.Op] = st.Count
	}
	if count[perfuse.OpWrite] != writes || count[perfuse.OpFsync] < writes {
		t.Errorf("%d WRITEs, %d FSYNCs; want %d WRITEs, each fsynced", count[perfuse.OpWrite], count[perfuse.OpFsync], writes)
	}
}
