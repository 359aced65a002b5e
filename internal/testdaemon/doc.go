// Package testdaemon holds small FUSE daemons of the kinds perfused's wrap
// mode must run unmodified, for its tests: gofusefs (go-fuse) and bazilfs
// (bazil.org/fuse, as rclone uses it). Each mounts the mountpoint it is
// given with its library's own fusermount route.
package testdaemon
