"""File operations with the safety rules shared by the cache and the output file.

Atomic replacement (temp file in the same directory, fsync, rename), private
modes, and no following of symlinks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat


class UnsafePath(Exception):
    """A path exists but is not something we may read or replace."""


def refuse_non_regular(path: str) -> None:
    """Raise UnsafePath when `path` exists and is not a regular file (symlinks included)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath("it is a symlink")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath("it is not a regular file")


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so readers see the old file or the new one, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_host_file(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """Read a file only the host may have written: regular, not a symlink, not group- or
    world-writable, in a directory that is not either (unless sticky)."""
    data, st = read_regular(path, limit)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(f"it is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o})")
    parent = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(OSError):
        pst = os.stat(parent)
        if pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not pst.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"its directory {parent} is group- or world-writable without the sticky bit")
    return data, st


def replace_regular(path: str, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace a regular file (or create it); refuse a symlink, directory or special file."""
    refuse_non_regular(path)
    atomic_write(path, data, mode)


def read_regular(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file without following a final symlink, at most `limit` bytes.

    Returns the content and the stat of the very file that was read.

    Raises UnsafePath for a symlink or special file, or one larger than `limit`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath("it is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath("it is not a regular file")
        if st.st_size > limit:
            raise UnsafePath(f"it is larger than {limit} bytes")
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafePath(f"it is larger than {limit} bytes")
        return b"".join(chunks), st
    finally:
        os.close(fd)
