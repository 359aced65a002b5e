#!/usr/bin/python3
"""A one-file pyfuse3 daemon for perfuse's tests.

Usage: pyfuse3_hello.py MOUNTPOINT

It serves hello.txt on MOUNTPOINT (/dev/fd/3: libfuse takes it as an open
FUSE connection) and ends its main loop cleanly on SIGTERM, as a pyfuse3
daemon should, so it exits 0.
"""
import errno
import os
import signal
import stat
import sys

import pyfuse3
import trio

NAME = b"hello.txt"
DATA = b"hello from pyfuse3\n"
INODE = pyfuse3.ROOT_INODE + 1


class Hello(pyfuse3.Operations):
    async def getattr(self, inode, ctx=None):
        attr = pyfuse3.EntryAttributes()
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode = stat.S_IFDIR | 0o755
        elif inode == INODE:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_size = len(DATA)
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr.st_ino = inode
        attr.st_nlink = 1
        attr.st_uid = os.getuid()
        attr.st_gid = os.getgid()
        return attr

    async def lookup(self, parent, name, ctx=None):
        if parent != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(INODE)

    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, off, token):
        if off < 1:
            pyfuse3.readdir_reply(token, NAME, await self.getattr(INODE), 1)

    async def open(self, inode, flags, ctx):
        if inode != INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EACCES)
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh, off, size):
        return DATA[off:off + size]

    async def release(self, fh):
        pass

    async def releasedir(self, fh):
        pass


async def serve():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                pyfuse3.terminate()
                break


def main():
    pyfuse3.init(Hello(), sys.argv[1], set())
    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
