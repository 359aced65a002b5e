package kernel_test

import "slices"

func slicesSort(s []string) { slices.Sort(s) }
