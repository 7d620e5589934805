"""Server-side batching: concurrent requests for one model version and signature share one model call.

Requests are queued per (version, signature, fetches, per-row input shapes and dtypes): only requests whose
inputs can be concatenated along the 0-th dimension share a queue. A queue is drained into a batch when a model
thread is free, so under load the batch grows by itself to whatever arrived while the previous call ran, and a
lone request waits for nothing: with `batch_timeout_micros=0` the batch closes at the end of the event-loop turn
that received the request (every request read in that turn joins it). A positive timeout holds a non-full batch
back that long for company, as TF Serving's batching does.

A batch's outputs are split back by row offsets. If a model returns outputs whose 0-th dimension is not the
batch size (not batch-major), or the batched call fails, each request of the batch is re-run alone, so one bad
request never fails its neighbours and a non-batchable model still answers correctly.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from serving.config import BatchingOptions
from serving.errors import ApiError, Code

log = logging.getLogger("dxpipe.serving")

Outputs = dict[str, np.ndarray]


class _Task:
    __slots__ = ("enqueued", "feeds", "future", "rows")

    def __init__(self, feeds: Mapping[str, np.ndarray], rows: int, future: asyncio.Future):
        self.feeds = feeds
        self.rows = rows
        self.future = future
        self.enqueued = time.monotonic()


class _Queue:
    __slots__ = ("fetches", "model", "rows", "signature", "tasks", "timer")

    def __init__(self, model, signature, fetches):
        self.model = model
        self.signature = signature
        self.fetches = fetches
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0
        self.timer: asyncio.TimerHandle | None = None


def _layout(feeds: Mapping[str, np.ndarray]) -> tuple[int, tuple] | None:
    """(rows, per-row shapes) if every feed has the same 0-th dimension, else None (not batchable).

    Dtypes need no check: feeds are converted to their signature's dtypes, so equal per-row shapes are
    enough for two requests to be concatenated.
    """
    rows = None
    shapes = []
    for arr in feeds.values():
        shape = arr.shape
        if not shape:
            return None
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        shapes.append(shape[1:])
    return rows, tuple(shapes)


def _run_alone(model, signature, feeds, fetches) -> Outputs | ApiError:
    try:
        return model.run(signature, feeds, fetches)
    except ApiError as exc:
        return exc
    except Exception as exc:
        log.exception("model %s version %s: unexpected error in a model call", model.name, model.version)
        return ApiError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


def run_batch(model, signature, fetches: Sequence[str], tasks: Sequence[_Task]) -> list[Outputs | ApiError]:
    """Runs tasks as one model call (in a worker thread) and splits the outputs; falls back to one call each."""
    if len(tasks) == 1:
        return [_run_alone(model, signature, tasks[0].feeds, fetches)]
    merged = {alias: np.concatenate([t.feeds[alias] for t in tasks]) for alias in signature.inputs}
    total = sum(t.rows for t in tasks)
    outputs = _run_alone(model, signature, merged, fetches)
    if isinstance(outputs, ApiError) or any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
        return [_run_alone(model, signature, t.feeds, fetches) for t in tasks]
    results: list[Outputs | ApiError] = []
    offset = 0
    for task in tasks:
        end = offset + task.rows
        results.append({alias: arr[offset:end] for alias, arr in outputs.items()})
        offset = end
    return results


class Batcher:
    """Queues model calls, merges compatible ones, and runs them on a small thread pool.

    Args:
        options: Batching options; with `enabled=False` every request is its own model call.
        on_batch: Called on the event loop with (model name, batch rows, requests in the batch) after each
            model call, for metrics.
    """

    def __init__(self, options: BatchingOptions, on_batch: Callable[[str, int, int], None] | None = None):
        self.options = options
        self._executor = concurrent.futures.ThreadPoolExecutor(
            options.num_batch_threads, thread_name_prefix="dxpipe-model"
        )
        self._queues: collections.OrderedDict[tuple, _Queue] = collections.OrderedDict()
        self._running = 0
        self._scheduled = False
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Stops the worker threads once the calls in progress finish."""
        self._executor.shutdown(wait=True)

    def submit(
        self, model, signature, feeds: Mapping[str, np.ndarray], fetches: tuple[str, ...]
    ) -> asyncio.Future:
        """Schedules a model call; the future resolves to the outputs by alias or raises ApiError."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        future = loop.create_future()
        layout = _layout(feeds) if self.options.enabled else None
        rows = layout[0] if layout is not None else None
        if rows is None or rows > self.options.max_batch_size:
            key: tuple = ("alone", id(future))
        else:
            key = (id(model), signature.key, fetches, layout[1])
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(model, signature, fetches)
        limit = self.options.max_batch_size * self.options.max_enqueued_batches
        if queue.rows and queue.rows + (rows or 1) > limit:
            future.set_exception(
                ApiError(
                    Code.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
                )
            )
            return future
        queue.tasks.append(_Task(feeds, rows or 1, future))
        queue.rows += rows or 1
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = self._loop
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        for key in list(self._queues):
            if self._running >= self.options.num_batch_threads:
                return
            queue = self._queues[key]
            while queue.tasks and queue.tasks[0].future.done():  # expired or cancelled while queued
                queue.rows -= queue.tasks.popleft().rows
            if not queue.tasks:
                del self._queues[key]
                continue
            if timeout and queue.rows < self.options.max_batch_size:
                wait = queue.tasks[0].enqueued + timeout - now
                if wait > 0:
                    if queue.timer is None:
                        queue.timer = loop.call_later(wait, self._timer_fired, queue)
                    continue
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            tasks = self._take(queue)
            if not queue.tasks:
                del self._queues[key]
            else:
                self._queues.move_to_end(key)  # round-robin across queues
            self._running += 1
            fut = loop.run_in_executor(
                self._executor, run_batch, queue.model, queue.signature, queue.fetches, tasks
            )
            fut.add_done_callback(lambda f, q=queue, t=tasks: self._finished(f, q, t))

    def _timer_fired(self, queue: _Queue) -> None:
        queue.timer = None
        self._dispatch()

    def _take(self, queue: _Queue) -> list[_Task]:
        tasks = [queue.tasks.popleft()]
        rows = tasks[0].rows
        queue.rows -= rows
        limit = self.options.max_batch_size
        while queue.tasks:
            head = queue.tasks[0]
            if head.future.done():
                queue.rows -= queue.tasks.popleft().rows
                continue
            if rows + head.rows > limit:
                break
            tasks.append(queue.tasks.popleft())
            rows += head.rows
            queue.rows -= head.rows
        return tasks

    def _finished(self, fut: asyncio.Future, queue: _Queue, tasks: list[_Task]) -> None:
        self._running -= 1
        try:
            results = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. the executor shut down: every waiter must hear of it
            results = [ApiError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")] * len(tasks)
        for task, result in zip(tasks, results, strict=True):
            if task.future.done():
                continue
            if isinstance(result, ApiError):
                task.future.set_exception(result)
            else:
                task.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(queue.model.name, sum(t.rows for t in tasks), len(tasks))
        if self._queues and not self._scheduled:
            self._dispatch()
