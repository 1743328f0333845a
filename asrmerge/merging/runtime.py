"""Where a merge runs: every thread, OpenMP and allocator setting of the merge executor.

Merge methods are pure functions (asrmerge.merging.registry, "Method contract"); they start no thread. Parallelism
is the executor's (asrmerge.merging.engine) and lives here:

- `side_by_side_pool`: the process's pool of worker threads that run one OpenMP thread each. The engine submits
  whole tensors of SVD methods to it (tensor parallelism); LAPACK's SVD gains little from a second thread while two
  SVDs side by side run nearly twice as fast, and a one-thread call gives the same bytes whatever the pool size.
- `map_side_by_side`: the per-task map the engine hands to SVD methods (their `map_tasks` argument) for a tensor
  merged on the calling thread (task parallelism). Inside a pool worker it maps in place: a worker never waits on
  its own pool. Context variables (the diagnostics' orthogonality recorder) follow each call into the pool.
- `prefetch_thread`: the reader's read-ahead thread.
- `one_openmp_thread`, `one_blas_thread`, `tune_allocator`: per-thread OpenMP and OpenBLAS, and process-wide glibc
  settings.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from asrmerge.lazy_import import lazy_import

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

_WORKER = threading.local()
_SIDE_BY_SIDE: dict[int, ThreadPoolExecutor] = {}
_OPENMP_WARNED = False
_ALLOCATOR_TUNED = False


def one_openmp_thread() -> bool:
    """Thread initializer: torch ops (and LAPACK calls) in this thread use one OpenMP thread. The setting is per
    thread, unlike torch.set_num_threads, which is process-wide. Returns False (and logs once) when torch's OpenMP
    runtime cannot be found: results are unchanged, the thread then competes with the others for the cores."""
    global _OPENMP_WARNED
    for library in sorted(Path(torch.__file__).parent.joinpath("lib").glob("lib*omp*")):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(str(library)).omp_set_num_threads(1)
            return True
    if not _OPENMP_WARNED:
        _OPENMP_WARNED = True
        log.warning("no OpenMP runtime beside torch: worker threads keep torch's default thread count")
    return False


@functools.cache
def _openblas_thread_setters() -> tuple[Callable[[int], int], ...]:
    """openblas_set_num_threads_local of every OpenBLAS the process has loaded (numpy's and scipy's wheels each bring
    one), found in /proc/self/maps; empty, with one log line, where there is none or it is too old (< 0.3.27)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    setters = []
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.rsplit("/", 1)[-1]}):
        with contextlib.suppress(OSError, AttributeError):
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
            setters.append(setter)
    if not setters:
        log.warning("no OpenBLAS with per-thread settings loaded: scipy's LAPACK calls keep its default thread count")
    return tuple(setters)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, OpenBLAS calls (numpy's products, scipy's LAPACK) made by this thread use one thread, then
    the previous count again. Per thread, like one_openmp_thread: the merge runs such calls side by side, one per
    worker, and a one-thread call gives the same bytes wherever it runs. Call after the libraries are loaded (the
    setters are looked up once)."""
    setters = _openblas_thread_setters()
    previous = [set_local(1) for set_local in setters]
    try:
        yield
    finally:
        for set_local, count in zip(setters, previous):
            set_local(count)


def _worker_initializer() -> None:
    _WORKER.active = True
    one_openmp_thread()


def in_worker() -> bool:
    """Whether the calling thread is one of the side-by-side pool's workers."""
    return getattr(_WORKER, "active", False)


def side_by_side_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads that run one OpenMP thread each (created once per size)."""
    pool = _SIDE_BY_SIDE.get(workers)
    if pool is None:
        pool = _SIDE_BY_SIDE[workers] = ThreadPoolExecutor(workers, "merge", initializer=_worker_initializer)
    return pool


def prefetch_thread() -> ThreadPoolExecutor:
    """A one-thread executor for reading ahead. One OpenMP thread for the reader's θ_t − θ₀: its own team of threads
    would spin on the cores that the merge's LAPACK calls use (measured on 2 cores: an SVD beside a reader took 1.7×
    as long). The caller shuts it down."""
    return ThreadPoolExecutor(1, thread_name_prefix="read", initializer=one_openmp_thread)


def cpu_workers() -> int:
    """How many side-by-side workers a merge on CPU uses: torch's thread count, 1 inside a worker."""
    return 1 if in_worker() else max(1, torch.get_num_threads())


def map_side_by_side(fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """fn(item) for each item, in order, lazily; on CPU up to `cpu_workers()` calls at a time, one OpenMP thread each.
    CUDA tensors, a single worker and calls from inside a worker map in place."""
    pending = list(items)
    workers = min(cpu_workers(), len(pending))
    if workers < 2 or any(isinstance(item, torch.Tensor) and item.device.type != "cpu" for item in pending):
        yield from map(fn, pending)
        return
    pool = side_by_side_pool(workers)
    for start in range(0, len(pending), workers):  # at most `workers` results alive at a time
        # One copy of the caller's context per call (a context cannot be entered by two threads at once).
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in pending[start : start + workers]]
        for future in futures:
            yield future.result()


def tune_allocator() -> None:
    """glibc only: serve allocations up to 64 MiB from the heap and keep up to 512 MiB of freed heap, instead of
    mapping and unmapping every slice-sized tensor, whose fresh pages then fault in again (a third of the time of an
    elementwise merge). Process-wide; a no-op elsewhere or when glibc is absent."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return
    _ALLOCATOR_TUNED = True
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
