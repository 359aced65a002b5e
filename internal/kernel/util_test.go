package kernel_test

import (
	"slices"
	"testing"
)

func slicesSort(s []string) { slices.Sort(s) }

// overlayDirs makes fuse-overlayfs's lower, upper and work directories.
func overlayDirs(t *testing.T) (lower, upper, work string) {
	return t.TempDir(), t.TempDir(), t.TempDir()
}
