"""A child process that does a pipeline run's MLflow work while TFX trains in the parent.

Why a process: importing MLflow and its SQLAlchemy store costs 2-3 s of pure-Python work. The local TFX
run uses well under one of the machine's cores on average, but it holds the GIL for much of that time,
so a thread cannot hide the import; a process can, on the idle core. Measured on the wdbc pipeline: the
MLflow share of a run drops from about 10 % (in-process) to about 2 %.

Protocol: the parent writes requests `(request id, function, args, kwargs)` and the child answers
`(request id, "ok" | "err", value)`; each frame is an 8-byte length and a pickle. Functions travel by
reference (module-level functions of `pipelines.*`), arguments are plain dataclasses. The first request
opens the MLflow run and the child keeps that session; every later function is called with it first.

The child ignores SIGINT and SIGTERM (the parent decides how the run ends) and, if its input closes
without the run having been ended (the parent was killed), ends the run FAILED itself, so a killed
pipeline never leaves a run RUNNING. Stray prints from libraries go to stderr, never into the protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.mlflow_store import TrackingError

_HEADER = struct.Struct(">Q")


def _write(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


@dataclasses.dataclass
class Pending:
    """A request whose answer has not been read yet."""

    request_id: int
    what: str


class Worker:
    """The parent's handle on the child process."""

    # A child whose run ended cleanly, kept for the next run in this process (see `release`).
    _idle: Worker | None = None

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._answers: dict[int, tuple[str, Any]] = {}

    @classmethod
    def start(cls) -> Worker:
        """Starts the child (returns at once; the child imports MLflow on its own time)."""
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.mlflow_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        return cls(process)

    @classmethod
    def acquire(cls) -> Worker:
        """Returns the idle child of an earlier run in this process if it can serve, else a new one.

        Re-use saves the child's start (~3 s of importing MLflow) when one process runs the pipeline
        again (a notebook, the test suite, the benchmark), which has no TFX import left to hide it
        behind. A re-used child first takes this process's current environment, where MLflow reads
        credentials and settings, exactly as a new child would inherit it.
        """
        idle, cls._idle = cls._idle, None
        if idle is not None:
            if idle._process.poll() is None:
                idle._answers.clear()
                with contextlib.suppress(Exception):  # any trouble: a new child instead
                    idle.call("passing the environment on", replace_environ, dict(os.environ))
                    return idle
            idle.close(wait=False)
        return cls.start()

    def release(self) -> None:
        """Keeps this child (its run ended cleanly) for the next `acquire` in this process.

        Its input closes when this process exits, and the child then exits on its own.
        """
        previous, Worker._idle = Worker._idle, self
        if previous is not None and previous is not self:
            previous.close(wait=False)

    def submit(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """Sends a request without waiting for its answer."""
        request_id = next(self._ids)
        try:
            _write(self._process.stdin, (request_id, fn, args, kwargs))
        except (BrokenPipeError, OSError) as exc:
            raise self._died(what) from exc
        return Pending(request_id, what)

    def result(self, pending: Pending) -> Any:
        """Waits for the answer to `pending`; re-raises the child's exception."""
        while pending.request_id not in self._answers:
            try:
                request_id, status, value = _read(self._process.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                raise self._died(pending.what) from exc
            self._answers[request_id] = (status, value)
        status, value = self._answers.pop(pending.request_id)
        if status == "err":
            raise value
        return value

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Sends a request and waits for its answer."""
        return self.result(self.submit(what, fn, *args, **kwargs))

    def close(self, timeout_s: float = 30.0, *, wait: bool = True) -> None:
        """Closes the child's input (it exits, ending an un-ended run FAILED) and reaps it.

        Args:
            timeout_s: How long the child may take to exit before it is killed.
            wait: Block until the child has exited. Without waiting, a daemon thread reaps it: the
                caller must already have every answer it needs (the run ended), since the child's
                interpreter shutdown (~0.9 s of MLflow and SQLAlchemy teardown) then overlaps with
                whatever the caller does next.
        """
        if self._process.stdin and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        if not wait:
            threading.Thread(
                target=self._reap, args=(timeout_s,), name="mlflow-worker-reaper", daemon=True
            ).start()
            return
        self._reap(timeout_s)

    def _reap(self, timeout_s: float) -> None:
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _died(self, what: str) -> TrackingError:
        code = self._process.poll()
        return TrackingError(
            f"the MLflow worker process exited (code {code}) while {what}; its error is printed above. "
            "Nothing more was logged for this run."
        )


def replace_environ(environ: dict[str, str]) -> None:
    """Runs in the child: makes its environment the parent's (a re-used child, see `Worker.acquire`)."""
    from pipelines import mlflow_store

    os.environ.clear()
    os.environ.update(environ)
    # The MLflow settings dxpipe derives from the config are derived again for the next session.
    mlflow_store.forget_env_settings()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception is replaced by a plain one.
        return TrackingError(f"{type(exc).__name__}: {exc}")


def main() -> int:
    """The child's loop: run requests until the parent closes the pipe."""
    from pipelines import mlflow_worker, tracking  # this file runs as __main__: compare with the module's

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests_in = sys.stdin.buffer
    answers_out = open(os.dup(sys.stdout.fileno()), "wb")  # noqa: SIM115 - lives as long as the process
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints from libraries must not corrupt frames

    session: Any = None
    while True:
        try:
            request_id, fn, args, kwargs = _read(requests_in)
        except EOFError:
            break
        try:
            if fn is tracking.open_session:
                session = fn(*args, **kwargs)
                value: Any = tracking.describe(session)
            elif fn is mlflow_worker.replace_environ:
                value = fn(*args, **kwargs)
            else:
                value = fn(session, *args, **kwargs)
            answer = (request_id, "ok", value)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent.
            # dxpipe's own errors are messages for the user; anything else is a bug worth a traceback.
            if type(exc).__module__.split(".")[0] not in ("pipelines", "components"):
                traceback.print_exc()

            answer = (request_id, "err", _picklable(exc))
        _write(answers_out, answer)
    if session is not None and not session.ended:
        tracking.end_session(
            session,
            "FAILED",
            {
                "dxpipe.failure": "the pipeline process exited without ending the run",
                "dxpipe.interrupted": "true",
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
