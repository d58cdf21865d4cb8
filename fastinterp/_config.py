"""Process-wide settings (the CPU thread count) and the build's configuration.

How the CPU kernels use their threads: an op goes parallel only when each
thread gets enough work (``threads_for``). While a parallel region runs, its
OpenMP threads are bound to distinct CPUs of the caller's allowed set (the
caller's thread to the CPU it is on) and each thread's previous affinity mask
is restored before the kernel returns (kernels/cpu/_team.h): on small VMs
the scheduler otherwise can leave a team of two on one vCPU, where it loses
whole scheduler ticks. When other processes keep the CPUs busy, a team waits
for its descheduled members and is slower than one thread: after two regions
in a row that took longer than their threads' summed CPU time, the kernels
run on one thread for a while, then try a team again. Results are
bit-identical either way. Nothing process-wide is changed (no environment
variable, no lasting affinity); ``FASTINTERP_TEAM_CONTROL=0`` turns placement
and back-off off. Every OpenMP region of the CPU kernels works this way
(blend, sample, resize, distance, the optimizers, the NCA softmax and the
kernels exported through the C ABI).
"""
from __future__ import annotations

import os
import platform
import sys
import threading
import weakref
from typing import Any, Literal, overload

from ._validate import is_int

__all__ = ["get_num_threads", "set_num_threads", "show_config"]


# OpenMP takes the thread count as a C int
_MAX_THREADS = 2**31 - 1


def _default_threads() -> int:
    """OMP_NUM_THREADS's first entry when it is a positive decimal number (ASCII digits,
    as OpenMP reads it; at most _MAX_THREADS), else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isascii() and env.isdigit() and int(env) > 0:
        return min(int(env), _MAX_THREADS)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()
_forked_child = False


_fork_safe_locks: weakref.WeakSet = weakref.WeakSet()


def fork_safe_lock(reentrant: bool = False) -> Any:
    """A new ``threading`` lock (an RLock when ``reentrant``) that a process made by
    ``fork`` finds released: the thread that held it at the fork (a server thread
    inside fastinterp while a DataLoader forks) does not exist in the child, which
    would otherwise wait for it for ever. Every lock of fastinterp is made here."""
    lock = threading.RLock() if reentrant else threading.Lock()
    _fork_safe_locks.add(lock)
    return lock


def _after_fork_in_child() -> None:
    """A process made by ``fork`` runs the kernels on one thread: GNU OpenMP's thread pool
    does not survive fork, and a parallel region in the child would wait for the
    parent's threads for ever. Its locks start released (``fork_safe_lock``)."""
    global _num_threads, _forked_child
    _num_threads, _forked_child = 1, True
    for lock in list(_fork_safe_locks):
        lock._at_fork_reinit()      # what the standard library does for its own locks


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n: int) -> None:
    """Set how many OpenMP threads fastinterp's CPU kernels use.

    Parameters
    ----------
    n : int
        A positive thread count. The default is ``OMP_NUM_THREADS`` when set,
        else the number of CPUs this process may run on. Results are
        bit-identical for any thread count.

    In a process made by ``fork`` (``multiprocessing``'s default start method
    on Linux, ``os.fork``) the kernels run on one thread, and ``n > 1`` is a
    RuntimeError: OpenMP's threads do not survive fork. Start the workers with
    the ``'spawn'`` or ``'forkserver'`` method for more threads (without
    preloading fastinterp into the fork server: its workers are forked from it).

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.set_num_threads(1); fi.get_num_threads()
    1
    """
    global _num_threads
    if not is_int(n) or not 1 <= n <= _MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be a positive int of at most "
                         f"{_MAX_THREADS}; got {n!r}.")
    n = int(n)          # (a NumPy int too, as set_output_cache takes one)
    if _forked_child and n > 1:
        raise RuntimeError(
            f"set_num_threads: this process was made by fork, whose child cannot run "
            f"OpenMP threads (the parent's thread pool does not survive fork: a parallel "
            f"region would wait for ever), so fastinterp runs on one thread here; got n={n}. "
            f"Start workers with multiprocessing.get_context('spawn') or 'forkserver' for "
            f"more threads.")
    _num_threads = n


def get_num_threads() -> int:
    """Return the thread count fastinterp's CPU kernels use (see set_num_threads).

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.get_num_threads() >= 1
    True
    """
    return _num_threads


def threads_for(work_items: int, min_per_thread: int = 32768) -> int:
    """Threads worth starting for ``work_items`` units: serial for tiny inputs."""
    return max(1, min(_num_threads, work_items // max(1, min_per_thread)))


def _config() -> dict[str, Any]:
    import numpy as np

    from . import _cpu
    from ._build import missing_kernel_modules
    info = _cpu.variant_info()
    return {
        "fastinterp": {"version": _version(), "path": os.path.dirname(os.path.abspath(__file__))},
        "kernels": {**info, "missing": missing_kernel_modules(),
                    "force_with": f"{_cpu.ENV}=<variant>"},
        "threads": {"fastinterp": get_num_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "machine": platform.machine()},
        "numpy": {"version": np.__version__},
    }


def _version() -> str:
    from . import __version__
    return __version__


@overload
def show_config(mode: Literal["stdout"] = "stdout") -> None: ...
@overload
def show_config(mode: Literal["dicts"]) -> dict[str, Any]: ...


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Show the build: which CPU kernel variant is loaded, and why.

    The compiled kernels exist in several variants (AVX-512, AVX2, SSE4.2
    builds, or one ``-march=native`` build); the fastest one this CPU runs is
    loaded at import, unless ``FASTINTERP_CPU_VARIANT`` forces one.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        Print a report (default), or return it as nested dicts.

    Returns
    -------
    dict or None
        The report for ``mode="dicts"``: sections ``fastinterp``, ``kernels``
        (``variant``, ``target``, ``path``, ``forced``, ``built``,
        ``cpu_level``, ``cpu_features``, ``missing``), ``threads``, ``python``
        and ``numpy``.

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.show_config("dicts")["kernels"]["variant"] in fi.show_config("dicts")["kernels"]["built"]
    True
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts'; got {mode!r}.")
    report = _config()
    if mode == "dicts":
        return report
    for section, items in report.items():
        print(f"{section}:")
        for key, value in items.items():
            if isinstance(value, list):
                value = ", ".join(value) if value else "-"
            print(f"  {key}: {value}")
    return None
