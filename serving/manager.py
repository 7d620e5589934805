"""Which versions of which models are loaded: discovery, loading, hot swap, unloading, status.

The life of a version follows TF Serving's (`START` -> `LOADING` -> `AVAILABLE` -> `UNLOADING` -> `END`, or
`END` with an error status when the load fails), and so does the policy for changes:

* New numbered directories under a base path are found by polling (`--file_system_poll_wait_seconds`); a
  directory without `saved_model.pb` yet is treated as still being written. Non-numeric names, such as the
  `.incoming-*` staging directories of `components/serving_pusher`, are ignored.
* A new version is loaded *and warmed up* in a loader thread while the old one keeps serving; only then is it
  swapped in (one assignment on the event loop, so no request sees a gap). Superseded versions are unloaded
  once every version the policy wants is available: availability is preserved, as with TF Serving's default
  `AvailabilityPreservingPolicy`.
* A version whose load fails is reported as `END` with the error in the status API and is not retried until
  its directory changes; the versions already serving stay.
* A version whose directory disappears is unloaded. An unload waits for the requests holding the version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterable

from serving.config import ModelConfig, load_model_config_file
from serving.errors import ApiError, Code, ModelConfigError, invalid_argument, not_found

log = logging.getLogger("dxpipe.serving")

_VERSION_DIR = re.compile(r"[0-9]+")
_INT64_MAX = (1 << 63) - 1
_MAX_ENDED_RECORDS = 16

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclasses.dataclass
class VersionRecord:
    """What the status API reports for one version."""

    version: int
    state: str = START
    error_code: Code = Code.OK
    error_message: str = ""
    failed_stamp: tuple | None = None


def scan_versions(base_path: str) -> dict[int, str] | None:
    """Numbered, complete version directories under a base path; None if the base path cannot be listed."""
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return None
    found = {}
    for entry in entries:
        if not _VERSION_DIR.fullmatch(entry.name):
            continue
        version = int(entry.name)
        if version > _INT64_MAX:
            continue
        try:
            if not entry.is_dir():
                continue
        except OSError:
            continue
        if _has_graph(entry.path):
            found[version] = entry.path
    return found


def _has_graph(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
        os.path.join(path, "saved_model.pbtxt")
    )


def _stamp(path: str) -> tuple:
    """Identifies a version directory's content well enough to notice that a failed one was replaced."""
    try:
        graph = os.path.join(path, "saved_model.pb")
        if not os.path.exists(graph):
            graph = os.path.join(path, "saved_model.pbtxt")
        st = os.stat(graph)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return ()


class _Model:
    """A configured model: its records and its available versions."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.records: dict[int, VersionRecord] = {}
        self.available: dict = {}
        self.latest = None
        self.loading: set[int] = set()
        self.lock = asyncio.Lock()
        self.removed = False
        self.warned_missing_base = False

    def refresh_latest(self) -> None:
        self.latest = self.available[max(self.available)] if self.available else None

    def prune_records(self) -> None:
        ended = sorted(v for v, r in self.records.items() if r.state == END)
        for version in ended[:-_MAX_ENDED_RECORDS]:
            del self.records[version]


class ModelManager:
    """Keeps the configured models' versions loaded according to their policies.

    Args:
        configs: The models to serve.
        loader: `loader(name, version, path)` returns a loaded version object (with `version`, `refs`,
            `close()`); it runs in the loader thread. `serving.savedmodel.load_version` in production.
        file_system_poll_seconds: How often base paths are listed; 0 disables polling after startup.
        config_file: A `models.config` to re-read every `config_poll_seconds` (0 disables).
        config_poll_seconds: See above.
    """

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        loader: Callable[[str, int, str], object],
        *,
        file_system_poll_seconds: float = 1.0,
        config_file: str | None = None,
        config_poll_seconds: float = 0.0,
    ):
        self._models: dict[str, _Model] = {c.name: _Model(c) for c in configs}
        self._loader = loader
        self._fs_poll = file_system_poll_seconds
        self._config_file = config_file
        self._config_poll = config_poll_seconds
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dxpipe-loader")
        self._tasks: set[asyncio.Task] = set()
        self._loads: set[asyncio.Task] = set()
        self._retiring: dict[int, asyncio.Event] = {}
        self._stopped = False

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Loads the initial versions, then starts polling.

        It waits for the loads to finish (or fail), as TF Serving does before it opens its ports.
        """
        await self.sync(wait=True)
        if self._fs_poll > 0:
            self._spawn(self._poll_file_system())
        if self._config_file and self._config_poll > 0:
            self._spawn(self._poll_config_file())

    async def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for model in self._models.values():
            for version in list(model.available):
                await self._unload(model, version, wait_timeout=5.0)
        self._executor.shutdown(wait=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _poll_file_system(self) -> None:
        while True:
            await asyncio.sleep(self._fs_poll)
            await self.sync()

    async def _poll_config_file(self) -> None:
        while True:
            await asyncio.sleep(self._config_poll)
            try:
                configs = await asyncio.to_thread(load_model_config_file, self._config_file)
            except ModelConfigError as exc:
                log.error("model config reload failed; keeping the current models: %s", exc)
                continue
            await self.apply_configs(configs)

    async def apply_configs(self, configs: Iterable[ModelConfig]) -> None:
        """Switches to a new set of model configs: new models load, removed ones unload."""
        wanted = {c.name: c for c in configs}
        for name, model in list(self._models.items()):
            if name not in wanted:
                log.info("model %s removed from the config; unloading it", name)
                model.removed = True
                del self._models[name]
                for version in list(model.available):
                    await self._unload(model, version)
            elif model.config != wanted[name]:
                model.config = wanted[name]
        for name, config in wanted.items():
            if name not in self._models:
                self._models[name] = _Model(config)
        await self.sync()

    async def sync(self, wait: bool = False) -> None:
        """One reconcile pass over every model (the poller calls this; tests may too).

        Args:
            wait: Also wait for the loads this pass started, and reconcile again after them.
        """
        for model in list(self._models.values()):
            await self._reconcile(model)
        # A finished load reconciles again and may start another (an older version after a failure, say):
        # wait until no load is left.
        while wait:
            pending = [task for task in self._loads if not task.done()]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)

    # ----------------------------------------------------------------------------------------- reconcile

    async def _reconcile(self, model: _Model) -> list[asyncio.Task]:
        async with model.lock:
            if model.removed or self._stopped:
                return []
            base = model.config.base_path
            on_disk = await asyncio.to_thread(scan_versions, base)
            if on_disk is None:
                if not model.warned_missing_base:
                    log.warning(
                        "model %s: cannot list base path %s; keeping what is loaded", model.config.name, base
                    )
                    model.warned_missing_base = True
                return []
            model.warned_missing_base = False
            candidates = []
            for version, path in on_disk.items():
                record = model.records.get(version)
                if record is not None and record.failed_stamp is not None:
                    if record.failed_stamp == await asyncio.to_thread(_stamp, path):
                        continue  # failed and unchanged: do not retry
                    record.failed_stamp = None
                candidates.append(version)
            aspired = set(model.config.policy.select(candidates))
            started = []
            for version in sorted(aspired, reverse=True):
                if version in model.available or version in model.loading:
                    continue
                model.loading.add(version)
                record = model.records.setdefault(version, VersionRecord(version))
                record.state, record.error_code, record.error_message = START, Code.OK, ""
                task = self._spawn(self._load(model, version, on_disk[version]))
                self._loads.add(task)
                task.add_done_callback(self._loads.discard)
                started.append(task)
            settled = all(v in model.available for v in aspired) and not model.loading
            for version, loaded in list(model.available.items()):
                gone = on_disk.get(version) != loaded.path
                if gone or (version not in aspired and settled):
                    self._spawn(self._unload(model, version))
            return started

    async def _load(self, model: _Model, version: int, path: str) -> None:
        name = model.config.name
        record = model.records[version]
        record.state = LOADING
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(self._executor, self._loader, name, version, path)
        except ApiError as exc:
            model.loading.discard(version)
            self._load_failed(model, record, path, exc.code, exc.message)
            await self._reconcile(model)  # the policy may now want an older version
            return
        except Exception as exc:  # noqa: BLE001 - any loader failure must end as a status, never kill the server
            model.loading.discard(version)
            self._load_failed(model, record, path, Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
            await self._reconcile(model)
            return
        model.loading.discard(version)
        if model.removed or self._stopped:
            await loop.run_in_executor(self._executor, loaded.close)
            record.state = END
            return
        model.available[version] = loaded
        model.refresh_latest()
        record.state = AVAILABLE
        log.info(
            "model %s version %d is available (loaded in %.2fs)", name, version, time.monotonic() - started
        )
        await self._reconcile(model)  # unload what the new version supersedes

    def _load_failed(self, model: _Model, record: VersionRecord, path: str, code: Code, message: str) -> None:
        record.state, record.error_code, record.error_message = END, code, message
        record.failed_stamp = _stamp(path)
        log.error("model %s version %d failed to load: %s", model.config.name, record.version, message)

    async def _unload(self, model: _Model, version: int, wait_timeout: float | None = None) -> None:
        loaded = model.available.pop(version, None)
        if loaded is None:
            return
        model.refresh_latest()
        record = model.records.setdefault(version, VersionRecord(version))
        record.state = UNLOADING
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while loaded.refs:
            event = self._retiring.setdefault(id(loaded), asyncio.Event())
            event.clear()
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                log.warning(
                    "model %s version %d unloaded with requests still holding it", model.config.name, version
                )
                break
            finally:
                self._retiring.pop(id(loaded), None)
        await asyncio.get_running_loop().run_in_executor(self._executor, loaded.close)
        record.state = END
        model.prune_records()
        log.info("model %s version %d unloaded", model.config.name, version)

    # ----------------------------------------------------------------------------------------- requests

    def lookup(self, name: str, version: int | None = None, label: str | None = None):
        """The loaded version a request addresses (`ServerCore::GetServableHandle`), not yet acquired.

        Raises:
            ApiError: 404 `Servable not found for request: Latest(m)` / `Specific(m, N)`, or 400
                `Unrecognized servable version label: l`.
        """
        model = self._models.get(name)
        if label is not None:
            if model is None or label not in model.config.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = model.config.labels[label]
        if version is None:
            if model is None or model.latest is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return model.latest
        loaded = model.available.get(version) if model is not None else None
        if loaded is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return loaded

    @staticmethod
    def acquire(loaded) -> None:
        """Marks a version as used by one more request."""
        loaded.refs += 1

    def release(self, loaded) -> None:
        """Ends one request's use of a version (and lets a pending unload go ahead)."""
        loaded.refs -= 1
        if loaded.refs == 0:
            event = self._retiring.get(id(loaded))
            if event is not None:
                event.set()

    def status(self, name: str, version: int | None = None) -> list[dict]:
        """`GetModelStatus`: version entries, highest first.

        Raises:
            ApiError: 404 when the model or the version has no state.
        """
        model = self._models.get(name)
        records = model.records if model is not None else {}
        if version is not None:
            if version not in records:
                raise not_found(f"Could not find version {version} of model {name}")
            chosen = [records[version]]
        else:
            if not records:
                raise not_found(f"Could not find any versions of model {name}")
            chosen = [records[v] for v in sorted(records, reverse=True)]
        return [
            {
                "version": str(r.version),
                "state": r.state,
                "status": {"error_code": r.error_code.name, "error_message": r.error_message},
            }
            for r in chosen
        ]

    def has_model(self, name: str) -> bool:
        """Whether a model of that name is configured."""
        return name in self._models

    def model_names(self) -> list[str]:
        """Names of the configured models."""
        return sorted(self._models)

    def version_states(self) -> list[tuple[str, int, str]]:
        """(model, version, state) for every known version, for metrics."""
        return [
            (name, version, record.state)
            for name, model in sorted(self._models.items())
            for version, record in sorted(model.records.items())
        ]
