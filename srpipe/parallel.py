"""Worker processes for the data stages: results in input order, a bounded number in flight.

A stage's output must not depend on how many workers made it, so every work item is
independent and results come back in input order. At most ``window`` items are in flight, so
memory holds a few images whatever the number of images. Warnings raised in a worker are
re-raised in the calling process (where the CLI prints them), and so are errors.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import warnings
from typing import Callable, Iterable, Iterator, TypeVar

from .hardware import available_cores

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int | None) -> int:
    """``workers`` processes, or every available core when None."""
    return available_cores() if workers is None else max(1, workers)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per worker: OpenCV's own threads would only compete


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a fork server that has imported the data
    modules once: they start in milliseconds and, unlike plain fork, inherit no threads (OpenCV's
    or torch's) that could hold a lock at the moment of forking."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["__main__", "srpipe.data", "srpipe.patches"])
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)


def _call(fn: Callable[[T], R], item: T, cwd: str | None = None) -> tuple[R, list[warnings.WarningMessage]]:
    if cwd is not None and os.getcwd() != cwd:
        os.chdir(cwd)  # workers start in the fork server's folder; relative paths follow the caller
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(item)
    return result, caught


def _replay(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        warnings.warn(w.message if isinstance(w.message, Warning) else str(w.message), w.category, stacklevel=3)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1, window: int | None = None) -> Iterator[R]:
    """``fn(item)`` for every item, in order, on ``workers`` processes (1: in this process).

    ``fn`` and the items must be picklable (a module-level function, ``functools.partial`` of one).
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for item in items:
            result, caught = _call(fn, item)
            _replay(caught)
            yield result
        return
    pool = _pool(min(workers, len(items)))
    pending: collections.deque = collections.deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(_call, fn, item, os.getcwd()))
            if len(pending) >= (window or 2 * workers):
                break
        while pending:
            result, caught = pending.popleft().result()
            for item in todo:
                pending.append(pool.submit(_call, fn, item, os.getcwd()))
                break
            _replay(caught)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
