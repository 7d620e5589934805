"""The promotion lock, the write-ahead journal of a promotion's steps, and the fault-injection hook.

A promotion (approve, rollback, or a repair by sync) changes three things that cannot change together:
the registry's `champion` alias (remote), the production directory (local) and the promotion log (the
commit point). Before the first change, the whole intended outcome is written to
`<base>/.promotion.journal.json` (atomically: temp file, fsync, rename). Each step then runs; the journal
is removed only after the log record and the tags are written. A process killed at any step leaves the
journal behind, and the next dxpipe command on the model (approve, rollback, sync, status) replays it
under the lock (`service.recover`): published -> completed (logged, alias and tags set); not published ->
undone (alias put back, leftovers removed, an "abort" record logged).

`fault_hook` lets tests stop a promotion deterministically at every named step (`STEPS`), the way a
kill -9 would: raising a BaseException skips every `except Exception` cleanup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines.promotion.audit_log import fsync_dir
from pipelines.promotion.errors import PromotionError

LOCK_NAME = ".promotion.lock"
JOURNAL_NAME = ".promotion.journal.json"
LOCK_TIMEOUT_S = 120.0

# The named steps of a journalled promotion, in order.
STEPS = ("journal-written", "alias-set", "published", "logged", "tagged")

# Tests set this to a callable taking the step name; it may raise to simulate a crash at that step.
fault_hook: Callable[[str], None] | None = None


def step(name: str) -> None:
    """Marks that step `name` is complete (the fault-injection point after it)."""
    if fault_hook is not None:
        fault_hook(name)


def _acquire(fd: int, path: Path, timeout_s: float) -> None:
    """Takes an exclusive flock on `fd`, polling so a stuck holder produces an error, not a hang."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise PromotionError(
                f"another promotion has held {path} for over {timeout_s:.0f} s; wait for it to finish and "
                "retry (the lock is released when its process exits)."
            )
        time.sleep(0.05)


@contextlib.contextmanager
def promotion_lock(base: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Holds `<base>/.promotion.lock` exclusively; the kernel releases it if the process dies."""
    base.mkdir(parents=True, exist_ok=True)
    path = base / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, timeout_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    """The intended outcome of one promotion, written before any change.

    Attributes:
        op_id: Unique id; the log record that commits it carries the same `op_id`.
        event: The log event it commits ("approve", "rollback" or "repair").
        version: The registry version becoming the served champion.
        alias_before: The champion alias before the change (restored on undo).
        production_version: The production version directory it publishes.
        digest: The SavedModel digest that directory must hold.
        record: The fields of the log record to append at the commit (without seq/time/hash).
        tags: The version tags to set after the commit {version: {key: value}}.
        started: Unix time the promotion started.
    """

    op_id: str
    event: str
    version: str
    alias_before: str | None
    production_version: int
    digest: str
    record: dict[str, Any]
    tags: dict[str, dict[str, str]]
    started: float

    @staticmethod
    def new_id() -> str:
        """A fresh op id."""
        return uuid.uuid4().hex


def journal_path(base: Path) -> Path:
    """Where the journal of a model lives."""
    return base / JOURNAL_NAME


def write_journal(base: Path, entry: JournalEntry) -> None:
    """Writes the journal atomically (temp file, fsync, rename, fsync of the directory)."""
    path = journal_path(base)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        json.dump(dataclasses.asdict(entry), handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(base)


def read_journal(base: Path) -> JournalEntry | None:
    """The pending journal entry, or None.

    Raises:
        PromotionError: The journal exists but cannot be read (named, with the fix).
    """
    path = journal_path(base)
    if not path.is_file():
        return None
    try:
        return JournalEntry(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise PromotionError(
            f"the promotion journal {path} is unreadable ({exc}); an interrupted promotion cannot be "
            "completed or undone automatically. Compare `dxpipe status` with the production directory, then "
            "delete the journal."
        ) from exc


def clear_journal(base: Path) -> None:
    """Removes the journal (the promotion is complete or undone)."""
    journal_path(base).unlink(missing_ok=True)
    for tmp in base.glob(f"{JOURNAL_NAME}.*.tmp"):
        tmp.unlink(missing_ok=True)
    fsync_dir(base)
