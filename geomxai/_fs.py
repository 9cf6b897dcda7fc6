"""The file system, written safely: atomic writes of files and folders, stale temporary files,
a check that a destination can be written, and checks of names used in paths.

A leaf module: it imports nothing of geomxai, so any subpackage may use it.

Temporary files. Every atomic write goes through a temporary file beside its destination named
``.<name>.<host>-<pid>-<random>.tmp``: unique (two writers never share one), hidden, and naming
its owner, so that a later writer can tell the leftover of a killed process (its pid no longer
runs on this host) from a file another process is writing right now. :func:`remove_stale_temps`
removes only names of that pattern (and the fixed ``.<name>.tmp`` and untagged
``.<name>.XXXXXXXX.tmp`` of earlier versions), never another file. A folder written whole
(:func:`atomic_folder`, the report) is built in a temporary folder of the same pattern.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("geomxai")

__all__ = [
    "STALE_AFTER_S",
    "atomic_folder",
    "atomic_path",
    "check_nonempty_path",
    "check_path_component",
    "check_free_space",
    "check_writable",
    "naming_errors",
    "no_space_error",
    "remove_stale_temps",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]

# -- temporary files ---------------------------------------------------------------------------
STALE_AFTER_S = 3600.0
"""A temporary file whose owner cannot be checked (another host, an earlier version's name) is
stale once nothing has written to it for this long."""

_RANDOM = r"[a-z0-9_]{8}"  # the random part tempfile.mkstemp adds
_TAGGED = re.compile(rf"^(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)-{_RANDOM}$")
_UNTAGGED = re.compile(rf"^{_RANDOM}$")


def _host_tag() -> str:
    """The host name as it goes into a temporary name: letters, digits and ``-``, 32 at most."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def _new_temp(path: Path) -> tuple[int, Path]:
    # The pid is read at each call: a forked worker writes under its own.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_host_tag()}-{os.getpid()}-", suffix=".tmp", dir=path.parent
    )
    return fd, Path(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def _temp_target(filename: str) -> tuple[str, re.Match | None] | None:
    """``(name, tagged match)`` when ``filename`` is a temporary name of ours, else None."""
    if not (filename.startswith(".") and filename.endswith(".tmp")):
        return None
    stem = filename[1:-4]
    name, _, tag = stem.rpartition(".")
    if name:
        tagged = _TAGGED.match(tag)
        if tagged or _UNTAGGED.match(tag):
            return name, tagged
    return None


def _is_stale(entry: os.DirEntry, owner: re.Match | None, *, owned: bool) -> bool:
    if owned:
        return True
    if owner is not None and owner["host"] == _host_tag():
        pid = int(owner["pid"])
        return pid != os.getpid() and not _alive(pid)
    return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S


def remove_stale_temps(folder, names, *, owned: bool = False, folders: bool = False) -> list[Path]:
    """Remove the temporary files that writers of ``names`` left in ``folder`` when they died.

    Parameters
    ----------
    folder : path-like
        Only its own entries are looked at (not its subfolders); a missing folder has none.
    names : iterable of str, or callable
        The destination names (``"epoch_0003.pt"``) whose temporary files may go, or a
        predicate on a destination name (``lambda n: n.endswith(".nc")``).
    owned : bool
        True when the caller holds the folder's lock (:class:`DirectoryLock`), so no other
        process writes there: every temporary file of ``names`` goes. Otherwise only those
        whose owner is gone: a pid that no longer runs on this host, or, where the owner cannot
        be checked, a file untouched for :data:`STALE_AFTER_S` seconds.
    folders : bool
        Also remove the temporary *folders* of ``names`` (those :func:`atomic_folder` writes),
        with everything in them; only names of this version's tagged pattern
        ``.<name>.<host>-<pid>-<random>.tmp``, never a symlink. Off by default: no file writer
        makes folders, so a folder of that name is then not ours to remove.

    Returns
    -------
    list of Path
        The files (and folders) removed. Those that cannot be removed are left, silently:
        cleaning is a courtesy and never the reason a run fails.
    """
    folder = Path(folder)
    wanted = names if callable(names) else set(names).__contains__
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        parsed = _temp_target(entry.name)
        if parsed is not None and wanted(parsed[0]):
            fixed, owner = False, parsed[1]
        elif (
            entry.name.startswith(".") and entry.name.endswith(".tmp") and wanted(entry.name[1:-4])
        ):
            # ``.<name>.tmp``: the one fixed temporary name of earlier versions; no writer of
            # this version uses it, so no live process owns it.
            fixed, owner = True, None
        else:
            continue
        try:
            if folders and owner is not None and entry.is_dir(follow_symlinks=False):
                if _is_stale(entry, owner, owned=owned) and _remove_tree(entry):
                    removed.append(Path(entry.path))
                continue
            stale = fixed or _is_stale(entry, owner, owned=owned)
            if stale and entry.is_file(follow_symlinks=False) and _remove(entry):
                removed.append(Path(entry.path))
        except OSError:
            continue
    if removed:
        log.info("removed %d temporary file(s) a stopped writer left in %s", len(removed), folder)
    return removed


def _remove(entry: os.DirEntry) -> bool:
    try:
        os.unlink(entry.path)
    except OSError:
        return False
    return True


def _remove_tree(entry: os.DirEntry) -> bool:
    import shutil

    shutil.rmtree(entry.path, ignore_errors=True)
    return not os.path.lexists(entry.path)


def _new_file_mode(base: int = 0o666) -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process's umask (``base``
    0o777: the mode ``mkdir`` would give a new folder).

    mkstemp creates its file 0o600 (mkdtemp its folder 0o700); the renamed result should look
    like any other file the user writes. The umask is read from /proc where it can be, because
    setting it to read it back is not safe while other threads create files.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return base & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def naming_errors(path) -> Iterator[None]:
    """An OSError without a file name, or naming a temporary file of ``path``, names ``path``.

    A full disk raises ENOSPC from ``write()``, which knows no file name, and a read-only
    folder refuses the hidden temporary name: the person needs the destination.
    """
    path = Path(path)
    try:
        yield
    except OSError as err:
        name = None if err.filename is None else Path(os.fsdecode(err.filename)).name
        ours = name is None or (name.startswith(f".{path.name}.") and name.endswith(".tmp"))
        if err.errno is None or not ours:
            raise
        try:
            named = type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))
        except Exception:  # an OSError subclass with another constructor: leave it as it is
            named = None
        if named is None:
            raise
        raise named from err


def _sync_folder(folder: Path) -> None:
    # The rename itself reaches the disk only with its folder; best effort (not every file
    # system lets a folder be opened or synced).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, write: Callable[[IO], object], *, binary: bool = False) -> Path:
    """Write through ``write(fh)`` to a uniquely named temporary file beside ``path``, fsync,
    then rename it into place.

    A crash leaves either the old file or the new one, never a half-written one; two writers never
    share a temporary name. Temporary names are ``.<name>.<host>-<pid>-<random>.tmp``; those a
    killed writer of the same ``path`` left are removed first (:func:`remove_stale_temps`). The
    file gets the mode a plain ``open()`` would give it (0o666 less the umask).

    Raises
    ------
    OSError
        As the write met it (a full disk, a read-only folder), naming ``path``; the old file, if
        any, is left as it was and the temporary file is removed.
    """
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, [path.name])
        fd, name = _new_temp(path)
        try:
            with os.fdopen(fd, "wb" if binary else "w") as fh:
                write(fh)
                fh.flush()
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), _new_file_mode())
                os.fsync(fh.fileno())
            os.replace(name, path)
        except BaseException:
            name.unlink(missing_ok=True)
            raise
    _sync_folder(path.parent)
    return path


def write_text_atomic(path, text: str) -> Path:
    """:func:`write_atomic` of a text."""
    return write_atomic(path, lambda fh: fh.write(text))


def atomic_path(path, save: Callable[[Path], object]) -> Path:
    """Call ``save(tmp)`` on a unique temporary path beside ``path``, then rename it into place.

    For writers that take a path rather than a file object (``xr.Dataset.to_netcdf``,
    ``Figure.savefig``). The same guarantees as :func:`write_atomic`: the temporary file is
    removed if ``save`` fails, its contents reach the disk before the rename, stale temporary
    files of ``path`` are removed first, and errors name ``path``.
    """
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, [path.name])
        fd, name = _new_temp(path)
        os.close(fd)
        try:
            save(name)
            os.chmod(name, _new_file_mode())
            fd = os.open(name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(name, path)
        except BaseException:
            name.unlink(missing_ok=True)
            raise
    _sync_folder(path.parent)
    return path


# -- bytes written whole, with the space checked first -----------------------------------------
FREE_MARGIN = 64 * 1024
"""Bytes a write leaves free beyond the file itself (its folder entry, the file system's own
bookkeeping): a write that would leave less is refused before it starts."""


def _size(nbytes: float) -> str:
    """``"1.2 MB"``, or ``"28 kB"`` below a tenth of a megabyte."""
    if nbytes >= 0.1 * 2**20:
        return f"{nbytes / 2**20:.1f} MB"
    return f"{max(math.ceil(nbytes / 1024), 1)} kB"


def no_space_error(path, nbytes: int, free: int | None = None) -> OSError:
    """The ``ENOSPC`` OSError naming ``path``: "No space left on device (need about N MB, M MB
    free)"; the command line turns it into one line with the fix.

    Examples
    --------
    >>> str(no_space_error("/d/results.nc", 3 * 2**20, 28_000))
    "[Errno 28] No space left on device (need about 3.0 MB, 28 kB free): '/d/results.nc'"
    """
    have = "" if free is None else f", {_size(free)} free"
    return OSError(
        errno.ENOSPC, f"No space left on device (need about {_size(nbytes)}{have})", str(path)
    )


def check_free_space(path, nbytes: int) -> None:
    """Raise :func:`no_space_error` now when the file system of ``path`` (the nearest existing
    folder on the way to it) has less than ``nbytes`` + :data:`FREE_MARGIN` bytes free.

    A file being replaced frees its blocks only after the rename, so it counts as taken. Where
    the free space cannot be read the check passes: the write itself is checked too.
    """
    base = Path(os.path.abspath(path)).parent
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return
    if free < nbytes + FREE_MARGIN:
        raise no_space_error(path, nbytes, free)


def write_bytes_atomic(path, data) -> Path:
    """Write the bytes ``data`` to ``path`` whole or not at all, after checking there is room.

    For files serialised in memory first (``ds.to_netcdf(engine="h5netcdf")`` returns the
    bytes of a netCDF-4 file). Writing them is plain checked ``os.write`` calls into a
    temporary file beside ``path`` (:func:`write_atomic`'s pattern), an fsync and a rename: a
    full disk is an ordinary ``OSError`` here, where a library writing the file itself may
    end the process (HDF5 crashes with SIGSEGV when its own writes meet ENOSPC).

    Parameters
    ----------
    path : path-like
        The destination; its folder is created when missing.
    data : bytes-like
        ``bytes``, ``bytearray`` or a ``memoryview``.

    Raises
    ------
    OSError
        ``ENOSPC`` "No space left on device (need about N MB ...)" naming ``path`` when the
        disk has no room for ``data`` (checked before anything is written) or fills during the
        write; otherwise what the write met (read-only, no permission), naming ``path``. The
        previous file at ``path``, if any, is left as it was; the temporary file is removed.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.bin"
    >>> write_bytes_atomic(target, b"abc").read_bytes()
    b'abc'
    """
    path = Path(path)
    view = memoryview(data).cast("B")
    nbytes = view.nbytes
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, [path.name])
        check_free_space(path, nbytes)
        fd, name = _new_temp(path)
        try:
            try:
                done = 0
                while done < nbytes:  # os.write may write less than asked (a signal, a quota)
                    done += os.write(fd, view[done:])
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, _new_file_mode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(name, path)
        except OSError as err:
            name.unlink(missing_ok=True)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space_error(path, nbytes) from err
            raise
        except BaseException:
            name.unlink(missing_ok=True)
            raise
    _sync_folder(path.parent)
    return path


# -- folders written whole -----------------------------------------------------------------------
_AT_FDCWD = -100  # renameat2's "relative to the current folder" (Linux)
_RENAME_EXCHANGE = 2


def _renameat2():
    """Linux's renameat2 through libc, or None where there is none (other systems, old libc)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one atomic step; False where the system
    or the file system cannot (then nothing changed)."""
    func = _renameat2()
    if func is None:
        return False
    import ctypes

    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _new_temp_folder(path: Path) -> Path:
    return Path(
        tempfile.mkdtemp(
            prefix=f".{path.name}.{_host_tag()}-{os.getpid()}-", suffix=".tmp", dir=path.parent
        )
    )


def _carry(old: Path, new: Path, skip) -> None:
    """The entries of ``old`` that ``new`` lacks (and ``skip`` does not name), into ``new``:
    files as hard links (no space, no copy time; a copy where the file system refuses a link),
    folders recreated with their contents carried the same way, symlinks as symlinks."""
    import shutil

    for entry in os.scandir(old):
        target = new / entry.name
        if entry.name in skip or os.path.lexists(target):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            target.mkdir()
            shutil.copymode(entry.path, target)
            _carry(Path(entry.path), target, ())
        else:
            try:
                os.link(entry.path, target, follow_symlinks=False)
            except OSError:
                shutil.copy2(entry.path, target, follow_symlinks=False)


def _sync_tree(folder: Path) -> None:
    """Every file and folder under ``folder`` on the disk before it is renamed into place (a
    power cut after a rename must not leave empty files under the new name)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_folder(Path(root))


def _in_place(path: Path) -> bool:
    """Whether the folder ``path`` must stay where it is: a mount point (a container volume)
    cannot be renamed, and the current folder (or one above it) must not be renamed from under
    the process."""
    cwd = Path(os.path.realpath(os.getcwd()))
    return os.path.ismount(path) or path == cwd or path in cwd.parents


def _remove_entry(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _swap_in(tmp: Path, path: Path) -> Path | None:
    """Put the folder ``tmp`` at ``path``; the old folder's new (temporary) name, if any."""
    if not path.exists():
        os.rename(tmp, path)
        return None
    if _exchange(tmp, path):
        return tmp
    # No atomic exchange here: the old folder goes aside, the new one in. A process killed
    # between the two renames leaves no folder at ``path`` (both are under temporary names).
    aside = _new_temp_folder(path)
    os.rename(path, aside)  # onto the empty folder mkdtemp made, so the name is unique
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)
        raise
    return aside


def _swap_entries(tmp: Path, path: Path, replaces: frozenset) -> None:
    """The entries of the folder ``tmp`` (made inside ``path``) into ``path``, each whole; the
    entries of ``replaces`` that ``tmp`` lacks are removed."""
    written = set(os.listdir(tmp))
    for name in sorted(written | replaces):
        new, old = tmp / name, path / name
        if name not in written:
            _remove_entry(old)
        elif new.is_dir() and old.is_dir() and not old.is_symlink():
            if not _exchange(new, old):  # after an exchange, ``new`` holds the old folder
                aside = _new_temp_folder(tmp / name)
                os.rename(old, aside)
                os.rename(new, old)
        else:
            if old.is_dir() and not old.is_symlink():
                _remove_entry(old)
            os.replace(new, old)


def _named_in(err: OSError, tmp: Path, given: Path) -> OSError:
    """``err``, naming the file under ``given`` where it names one under the temporary ``tmp``
    (which is gone by the time anyone reads the message)."""
    if err.filename is None or err.errno is None:
        return err
    try:
        rel = Path(os.fsdecode(err.filename)).relative_to(tmp)
    except ValueError:
        return err
    try:
        return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(given / rel))
    except Exception:  # an OSError subclass with another constructor
        return err


@contextlib.contextmanager
def atomic_folder(path, *, replaces: Iterable[str]) -> Iterator[Path]:
    """A folder written whole or not at all: write into the folder yielded, which then takes
    ``path``'s place in one step.

    The folder yielded is new and empty, ``.<name>.<host>-<pid>-<random>.tmp`` beside ``path``
    (the pattern of :func:`write_atomic`'s files). When the ``with`` body returns, the entries
    of the old ``path`` that the body did not write and ``replaces`` does not name (a study's
    ``results.nc`` beside its report) are carried into it as hard links (copies where the file
    system refuses a link), every file is synced to the disk, and it is swapped in: in one
    atomic exchange where the system has one (Linux's ``renameat2(RENAME_EXCHANGE)``),
    otherwise by renaming the old folder aside and the new one in; the old folder is then
    removed. A reader sees the old folder or the new one, never a mixture; old entries of
    ``replaces`` that the body did not write again are gone.

    On any failure (an exception in the body, a full disk while carrying or syncing) the
    temporary folder is removed and ``path`` is left exactly as it was. Temporary folders that
    killed writers of ``path`` left are removed first (:func:`remove_stale_temps` with
    ``folders=True``); nothing else beside ``path`` is touched.

    A ``path`` that cannot be renamed (a mount point such as a container volume, or the
    current folder or one above it) keeps its place: the temporary folder is made inside it
    and each entry the body wrote is swapped in on its own, each whole but the set not in one
    step.

    Parameters
    ----------
    path : path-like
        The folder; created (with its parents) if missing. A symlink to a folder is followed.
    replaces : iterable of str
        The entry names the writer owns in ``path``: the old ones are replaced (or removed, if
        the body does not write them again); every other entry of ``path`` is kept.

    Raises
    ------
    OSError
        As the write met it, naming ``path`` (or the file under it that failed);
        ``NotADirectoryError`` for a file at ``path``. ``path`` is then as it was.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "report", replaces=["index.html"]) as tmp:
    ...     _ = (tmp / "index.html").write_text("<p>hello</p>")
    >>> sorted(p.name for p in root.iterdir())
    ['report']
    """
    import shutil

    given = Path(path)
    path = Path(os.path.realpath(given))
    replaces = frozenset(replaces)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(given))
    in_place = path.exists() and _in_place(path)
    with naming_errors(given):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path if in_place else path.parent, [path.name], folders=True)
        tmp = _new_temp_folder(path / path.name if in_place else path)
        old = None
        try:
            try:
                yield tmp
            except OSError as err:
                named = _named_in(err, tmp, given)
                if named is err:
                    raise
                raise named from err
            if in_place:
                _sync_tree(tmp)
                _swap_entries(tmp, path, replaces)
                old = tmp
            else:
                if path.exists():
                    _carry(path, tmp, replaces)
                    shutil.copymode(path, tmp)
                else:
                    os.chmod(tmp, _new_file_mode(0o777))
                _sync_tree(tmp)
                old = _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _sync_folder(path if in_place else path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(path, *, folder: bool = False) -> None:
    """Raise now the OSError that writing ``path`` would meet later, before any work is done.

    Creates (and removes) a temporary file in the nearest existing folder on the way to
    ``path``: a read-only mount, a folder without write permission or a file standing where a
    folder must be is found before an analysis that takes hours, not after it.

    Parameters
    ----------
    path : path-like
        The file (or, with ``folder=True``, the folder) to be written.
    folder : bool
        ``path`` is a folder to write into.

    Raises
    ------
    OSError
        ``PermissionError``, ``OSError(EROFS)``, ``NotADirectoryError``, ``IsADirectoryError``,
        naming ``path``.
    """
    target = Path(path)
    if not folder and target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    if folder and target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
    base = target if folder else target.parent
    base = Path(os.path.abspath(base))
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(base))
    with naming_errors(target):
        fd, name = _new_temp(base / target.name)
        os.close(fd)
        name.unlink()


# -- names used in paths -----------------------------------------------------------------------
def check_path_component(value, what: str) -> str:
    """``value`` if it is one folder or file name that stays inside the folder it is joined to.

    Refused: a non-string, the empty string, ``.`` and ``..``, anything with a path separator
    (``a/b``, ``../../x``) or a NUL byte.

    Examples
    --------
    >>> check_path_component("quick", "[study] name")
    'quick'
    >>> check_path_component("../x", "[study] name")
    Traceback (most recent call last):
    ...
    ValueError: [study] name must be one folder name (not empty, '.' or '..', without '/' ...
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string; got {type(value).__name__} {value!r}")
    separators = {"/", "\\", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    if value in ("", ".", "..") or any(s in value for s in separators):
        raise ValueError(
            f"{what} must be one folder name (not empty, '.' or '..', without '/' or '\\\\'), "
            f"so that what it names stays inside its folder; got {value!r}"
        )
    return value


def check_nonempty_path(value, what: str) -> Path:
    """``Path(value)``, refusing the empty string (which ``Path`` reads as the current folder)
    and a NUL byte (which no file name holds: the system call would fail with "embedded null
    byte", naming neither the setting nor the file it came from)."""
    if value is None or not str(value).strip():
        raise ValueError(f"{what} must be a path; got an empty one ({value!r})")
    text = os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) else str(value)
    if "\0" in text:
        raise ValueError(f"{what} must be a path without NUL bytes; got {text!r}")
    return Path(value)
