"""The audit spool: rows the database could not take, kept on local disk until it can.

One JSON-lines file per process under `<CDS_DATA_DIR>/spool/audit/`, appended and fsync'd,
held under an exclusive `flock` for as long as its process lives. A process drains a file by
first claiming it: its own at any time, another's only when no process holds its lock (the
process ended: crashed, killed, restarted). The claim renames the file, so two processes never
drain the same one; a drained file is deleted. Rows carry the unique id they were recorded
with, so a file drained twice (a crash between the write and the delete) is stored once.

Counting is cheap (`depth()` runs every 0.2 s per worker): this process counts the rows it
appends; another process's file is counted once, then only in the bytes it grew by (the files
are only ever appended to), remembered by inode. A claimed file is read in chunks of rows, never
whole (after a long outage it may hold millions).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("cds_service.stores")


class Spool:
    def __init__(self, directory: Path):
        self.directory = directory
        self._live: tuple[int, Path, int] | None = None  # fd, path, owning pid
        self._live_rows = 0  # rows appended to the live file
        self._claimed: dict[Path, int] = {}  # claimed path -> fd (locked), to drain
        # Other files' line counts: path -> (inode, bytes counted, lines in them).
        self._counted: dict[Path, tuple[int, int, int]] = {}

    def append(self, rows: list[dict]) -> None:
        fd = self._live_fd()
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        self._live_rows += len(rows)

    def _live_fd(self) -> int:
        if self._live is not None and self._live[2] == os.getpid():
            return self._live[0]
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):  # the new name survives a crash
            _fsync_dir(self.directory)
        self._live = (fd, path, os.getpid())
        self._live_rows = 0
        return fd

    def claim(self) -> list[Path]:
        """Claim this process's file and every file no living process holds; the paths of
        all files this process now has to drain."""
        if self._live is not None and self._live[2] == os.getpid():
            fd, path, _ = self._live
            self._live = None  # the next append starts a new file
            self._claimed[self._rename(path)] = fd
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(self.directory.glob("*.jsonl")):
                if path in self._claimed:
                    continue
                fd = self._take(path)
                if fd is not None:
                    self._claimed[self._rename(path)] = fd
        return list(self._claimed)

    def _take(self, path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError  # drained and deleted by another process meanwhile
        except (BlockingIOError, FileNotFoundError):  # held by a living process, or gone
            os.close(fd)
            return None
        return fd

    def _rename(self, path: Path) -> Path:
        claimed = self.directory / f"claimed-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        os.rename(path, claimed)
        return claimed

    def batches(self, path: Path, size: int) -> Iterator[list[dict]]:
        """The rows of a claimed file, `size` at a time, read as they are needed (a chunk of the
        file in memory, never all of it); a line cut short by a crash is skipped (its write was
        never acknowledged, so its rows were spooled again or are in the database)."""
        fd = self._claimed[path]
        batch: list[dict] = []
        broken = 0
        for line in _lines(fd):
            try:
                batch.append(json.loads(line))
            except ValueError:
                broken += 1
                continue
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch
        if broken:
            log.warning(json.dumps({"event": "audit_spool_lines_skipped", "count": broken}))

    def done(self, path: Path) -> None:
        os.unlink(path)
        os.close(self._claimed.pop(path))
        self._counted.pop(path, None)

    def depth(self) -> int:
        """Rows waiting in this data directory's spool, of every process: this process's live
        file by its running count, every other file by its lines, counted in the bytes added
        since it was last counted."""
        live = self._live[1] if self._live is not None and self._live[2] == os.getpid() else None
        total = self._live_rows if live is not None else 0
        seen = set()
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.glob("*.jsonl"):
                if path == live:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    total += self._lines_in(path)
                    seen.add(path)
        for gone in self._counted.keys() - seen:
            del self._counted[gone]
        return total

    def _lines_in(self, path: Path) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            stat = os.fstat(fd)
            inode, counted, lines = self._counted.get(path, (stat.st_ino, 0, 0))
            if inode != stat.st_ino or stat.st_size < counted:  # another file by this name
                counted, lines = 0, 0
            while counted < stat.st_size:
                chunk = os.pread(fd, min(1 << 20, stat.st_size - counted), counted)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                counted += len(chunk)
        finally:
            os.close(fd)
        self._counted[path] = (stat.st_ino, counted, lines)
        return lines

    def close(self) -> None:
        if self._live is not None and self._live[2] == os.getpid():
            os.close(self._live[0])
            self._live = None
        for fd in self._claimed.values():
            os.close(fd)
        self._claimed.clear()


def _lines(fd: int, block: int = 1 << 18) -> Iterator[bytes]:
    """The lines of a file, read a block at a time from the start (the last one may lack its
    newline: a write cut short)."""
    offset, rest = 0, b""
    while chunk := os.pread(fd, block, offset):
        offset += len(chunk)
        *complete, rest = (rest + chunk).split(b"\n")
        yield from (line for line in complete if line)
    if rest:
        yield rest


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
