"""Every file cnnspec reads for a user, and every file it writes. No NumPy here: `cnnspec schema -o` uses it.

Reading (`open_input`, `read_input`): only regular files, checked on the opened descriptor (so a fifo, a
device such as /dev/zero, a socket or a directory is refused before a byte is read, and a swap between
the check and the open is caught), with a size limit that also holds for files whose size the kernel
does not report (/proc). Errors are DataError with the path and a plain reason; nothing else escapes.

Writing (`write_files`, `atomic_write`): each file is produced as an unnamed temporary file in the
destination's folder (Linux O_TMPFILE: a process killed while writing leaves nothing behind; elsewhere a
hidden `.name.XXXX.tmp` sibling, removed on any error) and renamed into place only when complete, so no
reader ever sees half a file. An output never replaces a symlink, a device, a fifo or a directory, and
never one of the command's own inputs (a command run under `track_inputs()` remembers every file
`open_input` opened).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import DataError
from .text import printable

_CHUNK = 1 << 20
_inputs: set[tuple[int, int]] | None = None  # (device, inode) of each file read, while tracking


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop?)"
    return exc.strerror or str(exc)


def open_input(path, what: str = "input", max_bytes: int | None = None):
    """Open a user's file for reading as a binary file object; DataError unless it is a regular file of at
    most `max_bytes` bytes (by its size on disk; read_input also bounds what is actually read)."""
    shown = printable(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(f"{shown}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{shown}: is a directory, expected {_a(what)} file") from None
    except OSError as exc:
        raise DataError(f"{shown}: cannot read {what} file: {_os_reason(exc)}") from None
    except (ValueError, UnicodeError):  # a NUL byte or an unencodable character in the name
        raise DataError(f"{shown}: cannot read {what} file: not a usable file name") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{shown}: is {_kind(st.st_mode)}, expected {_a(what)} file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise DataError(f"{shown}: {what} file is {st.st_size:,} bytes; the limit is {max_bytes:,} bytes")
        os.set_blocking(fd, True)
        if _inputs is not None:
            _inputs.add((st.st_dev, st.st_ino))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path, what: str = "input", max_bytes: int = 16 * 1024**2) -> bytes:
    """A user's regular file's bytes, at most `max_bytes` (DataError beyond, also for /proc files that report
    size 0, and for any read error)."""
    with open_input(path, what, max_bytes) as f:
        try:  # in chunks: read(max_bytes + 1) would allocate that much for every small file
            parts, total = [], 0
            while total <= max_bytes:
                chunk = f.read(min(_CHUNK, max_bytes + 1 - total))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
            data = b"".join(parts)
        except OSError as exc:
            raise DataError(f"{printable(str(path))}: cannot read {what} file: {_os_reason(exc)}") from None
    if len(data) > max_bytes:
        raise DataError(f"{printable(str(path))}: {what} file is larger than the limit of {max_bytes:,} bytes")
    return data


@contextlib.contextmanager
def track_inputs():
    """Remember every file open_input opens, so no output of the command can replace one of them."""
    global _inputs
    previous, _inputs = _inputs, set()
    try:
        yield
    finally:
        _inputs = previous


def check_output(path) -> Path:
    """DataError unless `path` may be (re)written: its folder exists, and it is new or a regular file that
    is not one of the command's inputs."""
    path = Path(path)
    shown = printable(str(path))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{shown}: cannot write, directory {printable(str(parent))} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise DataError(f"{shown}: cannot write ({_os_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{shown}: is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{shown}: is {_kind(st.st_mode)}; refusing to replace it (give a new or regular file; "
                        "without -o the output goes to stdout)")
    if _inputs is not None and (st.st_dev, st.st_ino) in _inputs:
        raise DataError(f"{shown}: is one of this command's inputs; refusing to overwrite it (choose another name)")
    return path


def check_outputs(outputs: dict) -> None:
    """check_output for each of {option: path or None}, and no two options naming the same file (also through
    a link or another spelling of the path): one output would silently replace the other. Call it before
    any work, so a bad output path fails at once."""
    seen: dict = {}
    for option, path in outputs.items():
        if not path:
            continue
        check_output(path)
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = os.path.realpath(path)
        if key in seen:
            raise DataError(f"{option} {printable(str(path))}: the same file as {seen[key]}; one output would "
                            "replace the other (give two names)")
        seen[key] = f"{option} {printable(str(path))}"


class _Temp:
    """A file being written in `path`'s folder, renamed over `path` by commit()."""

    def __init__(self, path: Path):
        self.path = path
        self.parent = path.parent if str(path.parent) else Path(".")
        self.fd = None
        self.name = None  # the named temporary sibling, when O_TMPFILE is not available
        try:  # a replaced file keeps its permissions (a 0600 solution or gradebook stays private)
            self.mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            self.mode = 0o666 & ~_umask()  # as readable as any new file
        try:
            self.fd = os.open(self.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            os.fchmod(self.fd, self.mode)
            self.writable = f"/proc/self/fd/{self.fd}"
            if not os.path.exists(self.writable):
                raise OSError(errno.ENOENT, "no /proc")
        except (AttributeError, OSError):
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            try:
                fd, self.name = tempfile.mkstemp(dir=self.parent, prefix=f".{path.name}.", suffix=".tmp")
            except OSError as exc:
                raise DataError(f"{printable(str(path))}: cannot write ({_os_reason(exc)})") from None
            os.fchmod(fd, self.mode)
            os.close(fd)
            self.writable = self.name

    def commit(self) -> None:
        if self.fd is not None:  # give the unnamed file a hidden name, then rename that into place
            self.name = tempfile.mktemp(dir=self.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            _link_unnamed(self.fd, self.name, self.mode)
        check_output(self.path)  # it may have become a symlink or an input while we wrote
        os.replace(self.name, self.path)
        self.name = None

    def discard(self) -> None:
        if self.name is not None and os.path.lexists(self.name):
            os.unlink(self.name)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _link_unnamed(fd: int, name: str, mode: int) -> None:
    """Give the O_TMPFILE file `fd` the name `name`: linkat(AT_EMPTY_PATH), else through /proc, else a copy."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.linkat(fd, b"", -100, os.fsencode(name), 0x1000) == 0:  # AT_FDCWD, AT_EMPTY_PATH
            return
    except (OSError, AttributeError):
        pass
    try:
        os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
        return
    except OSError:
        pass
    with open(name, "xb") as out:  # no way to name it here: copy what was written
        os.fchmod(out.fileno(), mode)
        offset, size = 0, os.fstat(fd).st_size
        while offset < size:
            chunk = os.pread(fd, _CHUNK, offset)
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)


def write_files(files: dict) -> None:
    """Write {path: bytes or str}: each goes to a temporary file and is renamed into place only when every
    one was written, so no reader ever sees a partial file and a failed write changes nothing. Each rename
    is atomic; the renames together are not (an interrupt between them leaves the first file new)."""
    temps: dict[Path, _Temp] = {}
    try:
        for path, data in files.items():
            path = check_output(path)
            temps[path] = tmp = _Temp(path)
            try:
                with open(tmp.writable, "wb") as f:
                    f.write(data.encode("utf-8") if isinstance(data, str) else data)
            except OSError as exc:
                raise DataError(f"{printable(str(path))}: cannot write ({_os_reason(exc)})") from None
        for path, tmp in temps.items():
            try:
                tmp.commit()
            except OSError as exc:
                raise DataError(f"{printable(str(path))}: cannot write ({_os_reason(exc)})") from None
    finally:
        for tmp in temps.values():
            tmp.discard()


def atomic_write(path, write) -> None:
    """Call write(tmp_path) to produce the file, then rename it over `path` (see write_files)."""
    path = check_output(path)
    tmp = _Temp(path)
    try:
        write(tmp.writable)
        tmp.commit()
    except OSError as exc:
        raise DataError(f"{printable(str(path))}: cannot write ({_os_reason(exc)})") from None
    finally:
        tmp.discard()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
