"""Count the syncs SQLite asks the operating system for, from inside the process, without strace.

SQLite syncs in C (its "unix" VFS calls fsync/fdatasync), so patching `os.fsync` sees nothing. This
registers, as the default VFS of the calling process, a copy of the "unix" VFS whose files count
every `xSync` call (the one place SQLite asks for a sync) by the kind of file, then pass it on. It
needs the SQLite library that Python's `sqlite3` module uses to be a shared library (`available()`
says whether it is); it changes the whole process, so use it in a subprocess of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import sqlite3  # loads _sqlite3 and with it the library this works on
from collections import Counter
from pathlib import Path

_OPEN_MAIN_DB, _OPEN_MAIN_JOURNAL, _OPEN_WAL = 0x100, 0x800, 0x80000  # sqlite3.h: SQLITE_OPEN_*
_FUNCS = ctypes.c_void_p * 32


class _IoMethods(ctypes.Structure):  # sqlite3_io_methods, as far as xSync; copied whole below
    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("xClose", ctypes.c_void_p),
        ("xRead", ctypes.c_void_p),
        ("xWrite", ctypes.c_void_p),
        ("xTruncate", ctypes.c_void_p),
        ("xSync", ctypes.c_void_p),
        ("rest", ctypes.c_void_p * 13),  # xFileSize ... xUnfetch (version 3)
    ]


class _File(ctypes.Structure):  # sqlite3_file: the methods pointer, then the VFS's own data
    _fields_ = [("pMethods", ctypes.POINTER(_IoMethods))]


class _Vfs(ctypes.Structure):  # sqlite3_vfs (version 3)
    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("szOsFile", ctypes.c_int),
        ("mxPathname", ctypes.c_int),
        ("pNext", ctypes.c_void_p),
        ("zName", ctypes.c_char_p),
        ("pAppData", ctypes.c_void_p),
        ("xOpen", ctypes.c_void_p),
        ("rest", ctypes.c_void_p * 15),  # xDelete ... xNextSystemCall
    ]


# The name stays a raw pointer: SQLite keeps more after its terminating NUL (URI parameters, the
# database's name before a journal's), which a copy of the string would lose.
_XOPEN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_File), ctypes.c_int, ctypes.POINTER(ctypes.c_int)
)
_XSYNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)

syncs: Counter[str] = Counter()  # file kind ("wal", "db", "journal", "other") -> xSync calls
_kinds: dict[int, str] = {}  # open file (its address) -> kind
_keep: list[object] = []  # everything SQLite holds a pointer to must outlive it


def _library_path() -> str | None:
    """The SQLite shared library loaded into this process (by `sqlite3`), if there is one."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        name = line.split()[-1]
        if "libsqlite3" in Path(name).name:
            return name
    return None


def available() -> str | None:
    """None if counting works here, else why not."""
    if sqlite3.sqlite_version_info < (3, 8, 0):
        return f"SQLite {sqlite3.sqlite_version} is older than the VFS layout used here"
    if _library_path() is None:
        return "Python's sqlite3 is not linked to a shared libsqlite3 (statically built?)"
    return None


def install() -> None:
    """Make a counting copy of the default VFS the default for every connection opened from now on."""
    path = _library_path()
    if path is None:
        raise RuntimeError(available())
    lib = ctypes.CDLL(path)  # the already loaded library: the same one `sqlite3` calls
    lib.sqlite3_vfs_find.restype = ctypes.POINTER(_Vfs)
    lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
    lib.sqlite3_vfs_register.argtypes = [ctypes.POINTER(_Vfs), ctypes.c_int]
    unix = lib.sqlite3_vfs_find(None)
    original_open = _XOPEN(unix.contents.xOpen)
    wrapped: dict[int, _IoMethods] = {}

    def counting(methods: ctypes._Pointer[_IoMethods]) -> ctypes._Pointer[_IoMethods]:
        address = ctypes.addressof(methods.contents)
        if address not in wrapped:
            copy = _IoMethods.from_buffer_copy(methods.contents)
            original_sync = _XSYNC(methods.contents.xSync)

            def sync(file: int, flags: int) -> int:
                rc = int(original_sync(file, flags))
                with contextlib.suppress(Exception):  # while the interpreter exits, counting may fail
                    syncs[_kinds.get(file, "other")] += 1
                return rc

            callback = _XSYNC(sync)
            copy.xSync = ctypes.cast(callback, ctypes.c_void_p)
            wrapped[address] = copy
            _keep.extend([original_sync, callback])
        return ctypes.pointer(wrapped[address])

    def open_(vfs: int, name: int | None, file: ctypes._Pointer[_File], flags: int, out: object) -> int:
        rc = int(original_open(unix, name, file, flags, out))
        if rc == 0 and file.contents.pMethods:
            kind = "wal" if flags & _OPEN_WAL else "db" if flags & _OPEN_MAIN_DB else "other"
            _kinds[ctypes.addressof(file.contents)] = "journal" if flags & _OPEN_MAIN_JOURNAL else kind
            file.contents.pMethods = counting(file.contents.pMethods)
        return rc

    vfs = _Vfs.from_buffer_copy(unix.contents)
    vfs.zName, vfs.pNext = b"counting-syncs", None
    callback = _XOPEN(open_)
    vfs.xOpen = ctypes.cast(callback, ctypes.c_void_p)
    _keep.extend([vfs, callback, original_open, wrapped])
    if lib.sqlite3_vfs_register(ctypes.byref(vfs), 1) != 0:
        raise RuntimeError("sqlite3_vfs_register failed")
