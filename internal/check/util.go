package check

import (
	"strconv"
	"strings"
)

func itoa[T int | uint32 | uint64 | int64](v T) string { return strconv.FormatInt(int64(v), 10) }
func hex(v uint64) string                              { return "0x" + strconv.FormatUint(v, 16) }
func join(s []string) string                           { return strings.Join(s, ", ") }
