"""How many threads tightlip's numerical work uses: one, unless the user chose.

tightlip's work is many small dense operations (float64 SVDs of a few hundred columns,
matrix-vector products, small-batch training), for which extra threads bring little, and on a
machine whose cores are shared they can make it much slower. The
command line therefore runs on one torch thread, and so does the Python API: every entry point
(:func:`tightlip.upper_bound`, :func:`tightlip.lower_bound`, training, evaluation) runs inside
:func:`library_threads`, which sets torch's intra-op thread count (which also governs the
LAPACK/BLAS that torch calls) for the duration of the call and restores the caller's count
afterwards.

The count (:func:`thread_count`):

* ``$TIGHTLIP_THREADS`` set to ``n ≥ 1``: ``n`` threads; ``0`` or ``auto``: torch's own
  setting is left alone;
* otherwise ``$OMP_NUM_THREADS`` or ``$MKL_NUM_THREADS`` set: the user chose a count for the
  process, and torch's setting is left alone;
* otherwise one thread.

A call to ``torch.set_num_threads`` alone is not a choice tightlip can see (torch's default
count looks the same); set ``TIGHTLIP_THREADS`` to keep it. The count is process-global state,
so bounds computed from several Python threads at once see each other's setting. numpy and
scipy (the SDP verifiers, HiGHS's callers, certified eigenvalues) load their own BLAS, which
reads its thread count once, when it loads; the same count is applied to it at run time through
``threadpoolctl`` (the BLAS libraries' own ``set_num_threads``), so a scipy eigenvalue call on a
shared machine is not slowed by threads fighting for its cores.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch
from threadpoolctl import threadpool_limits

from tightlip.errors import BadArgumentError

ENV_VARIABLE = "TIGHTLIP_THREADS"
#: variables with which a user sets a process-wide thread count that torch follows
USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

P = ParamSpec("P")
R = TypeVar("R")


def thread_count(environ: Mapping[str, str] | None = None) -> int | None:
    """The torch thread count tightlip uses, or ``None`` to leave torch's setting alone."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VARIABLE, "").strip().lower()
    if value:
        if value in ("0", "auto"):
            return None
        try:
            count = int(value)
        except ValueError:
            count = -1
        if count < 1:
            raise BadArgumentError(
                f"${ENV_VARIABLE} must be a positive integer, 0 or 'auto', "
                f"got {environ[ENV_VARIABLE]!r}"
            )
        return count
    if any(environ.get(name, "").strip() for name in USER_VARIABLES):
        return None
    return 1


def apply_thread_policy() -> None:
    """Set torch's thread count for the rest of the process (the command line's choice)."""
    count = thread_count()
    if count is not None:
        torch.set_num_threads(count)
        threadpool_limits(limits=count, user_api="blas")


@contextmanager
def library_threads() -> Iterator[None]:
    """Run the block on :func:`thread_count` threads, restoring the caller's count after."""
    count = thread_count()
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    with threadpool_limits(limits=count, user_api="blas"):
        if count == previous:
            yield
            return
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def uses_library_threads(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``function`` inside :func:`library_threads`."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with library_threads():
            return function(*args, **kwargs)

    return wrapper
