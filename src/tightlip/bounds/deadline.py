"""One bound method under a time limit: a slow solve is reported as timed out, not waited for.

An SDP on a real network (LipSDP, ECLipsE's per-layer SDPs) can run for many minutes, and a
solver's own time limit is not always honoured. :func:`run_with_deadline` runs the call in a
forked child process and kills it at the deadline, so the caller gets :class:`TimedOut` and
the terminal is free again. The child's result (a certificate) or its user error
(:class:`~tightlip.errors.TightlipError`, e.g. ``MethodNotApplicableError``) comes back through
a pipe; any other exception is a bug and is raised again with the child's traceback. Where
``fork`` is not available, the call runs in a daemon thread that is abandoned at the deadline.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tightlip.errors import TightlipError

T = TypeVar("T")


@dataclass(frozen=True)
class TimedOut:
    """The call did not finish within ``seconds``."""

    seconds: float


def _child(call: Callable[[], Any], writer: Any) -> None:
    try:
        outcome: tuple[str, Any] = ("ok", call())
    except TightlipError as error:
        outcome = ("raise", error)
    except BaseException:  # noqa: BLE001 - reported to the parent with its traceback
        outcome = ("bug", traceback.format_exc())
    try:
        writer.send(outcome)
    except Exception:  # noqa: BLE001 - an unpicklable result
        writer.send(("bug", traceback.format_exc()))
    finally:
        writer.close()


def _in_process(call: Callable[[], T], seconds: float) -> T | TimedOut:
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(call, writer), daemon=True)
    process.start()
    writer.close()
    try:
        if not reader.poll(seconds):
            return TimedOut(seconds)
        try:
            kind, payload = reader.recv()
        except EOFError:
            kind, payload = "died", None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        reader.close()
    if kind == "ok":
        return payload
    if kind == "raise":
        raise payload
    if kind == "bug":
        raise RuntimeError(f"the bound method failed in its subprocess:\n{payload}")
    raise RuntimeError(f"the bound method's process died (exit code {process.exitcode}; out of memory?)")


def _in_thread(call: Callable[[], T], seconds: float) -> T | TimedOut:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["ok"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return TimedOut(seconds)
    if "error" in box:
        raise box["error"]
    return box["ok"]


def run_with_deadline(call: Callable[[], T], seconds: float | None) -> T | TimedOut:
    """``call()``, or :class:`TimedOut` if it takes more than ``seconds`` (``None``: no limit)."""
    if seconds is None:
        return call()
    if seconds <= 0:
        raise ValueError(f"a deadline must be positive, got {seconds}")
    started = time.perf_counter()
    if "fork" in multiprocessing.get_all_start_methods():
        result = _in_process(call, seconds)
    else:  # pragma: no cover - platforms without fork
        result = _in_thread(call, seconds)
    if isinstance(result, TimedOut):
        return TimedOut(time.perf_counter() - started)
    return result
