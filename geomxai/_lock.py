"""The exclusive lock of a folder (a run directory, a study's run): :class:`DirectoryLock`.

A leaf module: it imports only geomxai's stdlib-only :mod:`geomxai._fs`.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import stat
import sys
from pathlib import Path

from geomxai._fs import naming_errors

try:  # POSIX; on other systems a folder lock is a no-op (see DirectoryLock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("geomxai")

__all__ = ["DirectoryLock", "DirectoryLockedError", "UnsafeLockError", "refuse_linked_lock"]


class DirectoryLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message names it (pid, host, start)."""


class UnsafeLockError(OSError):
    """The lock file's name holds something geomxai must not write into: a symbolic link, a
    hard link to another file, a folder or a device. The message names it and the fix."""

    def __init__(self, message: str, *, path=None):
        super().__init__(message)
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:  # the message alone (OSError's would print "[Errno None]")
        return str(self.args[0])


class DirectoryLock:
    """An exclusive OS lock (``flock``) on ``folder/lock_name``, held until :meth:`release`.

    The operating system drops the lock when its process ends, however it ends (SIGKILL
    included), so a lock file left behind by a killed process is simply taken over: staleness
    needs no timeout and no pid guesswork. The holder writes its pid, host, start time and
    command line into the file, so a refused process can say who holds it.

    Parameters
    ----------
    folder : path-like
        Created (with its parents) when missing; those folders are removed again on release if
        they are still empty, so a refused run leaves nothing behind.
    what : str
        How messages name the folder ("run directory", "study").
    hint : str
        What the refused process should do, ending the message.
    lock_name : str
        The lock file's name inside ``folder``.
    """

    def __init__(
        self,
        folder,
        *,
        what: str = "folder",
        hint: str = "wait for it to finish or stop it",
        lock_name: str = ".geomxai.lock",
    ):
        self.folder = Path(folder)
        self.path = self.folder / lock_name
        self.what = what
        self.hint = hint
        self._fd: int | None = None
        self._created: Path | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise :class:`DirectoryLockedError` naming its holder.

        Raises
        ------
        DirectoryLockedError
            A live process holds it.
        UnsafeLockError
            The lock file's name is a symbolic link, a hard link to another file or not a
            plain file: nothing is written through it, and it is not removed.
        OSError
            The folder cannot be created or written (read-only, no permission), naming it.
        """
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - no flock on this system: unprotected
            log.debug("no fcntl here; %s is not locked", self.folder)
            return self
        missing = Path(os.path.abspath(self.folder))
        created = None
        while not missing.exists() and missing != missing.parent:
            created, missing = missing, missing.parent
        for _ in range(20):  # a holder releasing at the same moment may remove the folder
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = self._open()
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise DirectoryLockedError(
                    f"{self.what} {str(self.folder)!r} is in use by another geomxai process "
                    f"({holder}); {self.hint}"
                ) from None
            except OSError as err:  # a file system without locks: go on, unprotected
                log.warning(
                    "cannot lock %s (%s); a second writer would not be refused", self.path, err
                )
                break
            # The holder before us may have removed the file after we opened it: our lock is
            # then on a file nobody else can see. Only a lock on the file at the path counts.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - twenty lost races in a row
            raise DirectoryLockedError(f"could not lock {self.what} {str(self.folder)!r}")
        previous = _read_holder(fd, raw=True)
        if previous:
            log.info("took over the lock of %s, whose holder ended without releasing it", previous)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join(sys.argv)[:300],
        }
        self._fd, self._created = fd, created
        try:
            with naming_errors(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except BaseException:  # a full disk: give the lock (and what it created) up again
            self.release()
            raise
        return self

    def _open(self) -> int:
        """The lock file, opened for reading and writing, never through a link.

        A new file is created exclusively (``O_CREAT | O_EXCL``); an existing one (a holder's,
        or the leftover of a killed one) is opened with ``O_NOFOLLOW``. Anything else at the
        lock's name (a symbolic link, a hard link to another file, a folder, a device) is
        refused: the holder truncates and writes its file, so a link would let a run overwrite
        whatever it points to.
        """
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            raise  # its holder removed it in between: the caller tries again
        self._refuse_unless_plain(info)
        try:
            # O_NONBLOCK: should a FIFO appear in between, the open must not wait for a writer.
            fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0))
        except OSError as err:
            if err.errno == errno.ELOOP:  # it became a link after the check above
                self._refuse_unless_plain(os.lstat(self.path))
            raise
        try:
            self._refuse_unless_plain(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refuse_unless_plain(self, info: os.stat_result) -> None:
        _refuse_unless_plain(self.path, info, self.what, self.folder)

    def release(self) -> None:
        """Give the lock up, remove its file, and remove the folders :meth:`acquire` created if
        nothing else was written into them."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Removed while still held, so no other process can have locked this file; only if
            # the name still is our file (never a link or a file put there since).
            if os.path.samestat(os.fstat(fd), os.lstat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        os.close(fd)
        if self._created is not None:
            folder = Path(os.path.abspath(self.folder))
            while True:
                try:
                    folder.rmdir()
                except OSError:  # not empty (the run was written), or gone
                    break
                if folder == self._created:
                    break
                folder = folder.parent
            self._created = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_linked_lock(folder, *, what: str = "folder", lock_name: str = ".geomxai.lock"):
    """Raise :class:`UnsafeLockError` if ``folder/lock_name`` is a symbolic link, a hard link to
    another file or not a plain file, as :meth:`DirectoryLock.acquire` would; nothing if it
    holds nothing or a plain file (a leftover lock).

    For a folder that is no longer locked but where a lock file once was (a study's runs
    folder): a link planted at the lock's name there is meant to be written through, so it is
    refused the same way, not silently passed by. The link and its target are not touched.
    """
    folder = Path(folder)
    path = folder / lock_name
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    _refuse_unless_plain(path, info, what, folder)


def _refuse_unless_plain(path: Path, info: os.stat_result, what: str, folder: Path) -> None:
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" to {os.readlink(path)!r}"
        except OSError:
            target = ""
        kind = f"a symbolic link{target}"
    elif not stat.S_ISREG(info.st_mode):
        kind = "not a plain file"
    elif info.st_nlink > 1:
        kind = f"a hard link shared with {info.st_nlink - 1} other name(s)"
    else:
        return
    raise UnsafeLockError(
        f"the lock file {str(path)!r} of {what} {str(folder)!r} is {kind}; "
        "geomxai never writes through it. Remove it (only the name; what it points to is "
        "not touched) and run again",
        path=path,
    )


def _read_holder(fd: int, *, raw: bool = False) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    if raw:
        return text
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
