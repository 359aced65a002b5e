package nfsexport_test

import (
	"context"
	"log"
	"os/exec"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/nfsexport"
)

// Export a squashfs image read-only on loopback, until the daemon ends.
func ExampleServer() {
	ctx := context.Background()
	d, err := perfuse.Start(ctx, exec.Command("squashfuse", "-f", "image.sqfs", "/dev/fd/3"))
	if err != nil {
		log.Fatal(err)
	}
	defer d.Unmount(ctx)
	s := nfsexport.New(d.Usermount, nfsexport.Options{ReadOnly: true})
	defer s.Close()
	// Then: mount -t nfs -o vers=3,proto=tcp,port=2049,mountport=2049,nolock 127.0.0.1:/ /mnt
	if err := s.ListenAndServe(nfsexport.DefaultAddr); err != nil {
		log.Print(err)
	}
}
