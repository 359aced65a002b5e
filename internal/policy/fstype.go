package policy

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// allowedFSTypes are the file system magic numbers a user other than root
// may mount over: fusermount3's list (check_nonroot_fstype in libfuse's
// util/fusermount.c). Pseudo file systems such as procfs and sysfs are
// left out: a mount there could hide a process's /proc entry from root,
// or fake kernel state.
var allowedFSTypes = map[int64]string{
	0x61756673:         "aufs",
	0x00000187:         "autofs",
	0xCA451A4E:         "bcachefs",
	0x9123683E:         "btrfs",
	0x00C36400:         "ceph",
	0xFF534D42:         "cifs",
	0x0000F15F:         "ecryptfs",
	0x2011BAB0:         "exfat",
	0x0000EF53:         "ext2/3/4",
	0xF2F52010:         "f2fs",
	0x65735546:         "fuse",
	0x01161970:         "gfs2",
	0x47504653:         "gpfs",
	0x0000482b:         "hfsplus",
	0x000072B6:         "jffs2",
	0x3153464A:         "jfs",
	0x0BD00BD0:         "lustre",
	0x00004D44:         "msdos",
	0x0000564C:         "ncp",
	0x00006969:         "nfs",
	0x00003434:         "nilfs",
	0x5346544E:         "ntfs",
	0x7366746E:         "ntfs3",
	0x5346414f:         "openafs",
	0x794C7630:         "overlayfs",
	0xAAD7AAEA:         "panfs",
	0x52654973:         "reiserfs",
	0xFE534D42:         "smb2",
	0x73717368:         "squashfs",
	0x01021994:         "tmpfs",
	0x24051905:         "ubifs",
	0x18031977:         "wekafs",
	0x736675005346544e: "ufsd",
	0x58465342:         "xfs",
	0x2FC12FC1:         "zfs",
	0x858458f6:         "ramfs",
}

// checkFSType refuses a mountpoint on a file system type outside the list.
func checkFSType(fd int, target string) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("mountpoint %s: statfs: %w", target, err)
	}
	if _, ok := allowedFSTypes[int64(st.Type)]; !ok {
		return fmt.Errorf("mountpoint %s: mounting over file system type %#x is forbidden: %w", target, st.Type, syscall.EPERM)
	}
	return nil
}
