"""Per-step progress callbacks: the one contract between long loops and their callers.

A pipeline that loops takes ``callback: StepCallback | None`` and calls ``callback(step, total)``
after each step (step counts from 1). Nodes pass one that drives ComfyUI's progress bar and raises
when the user cancels; plain Python gets a tqdm bar from :func:`tqdm_callback`. Loops whose steps
are long (inner optimiser iterations, several model calls) also take ``check: Check | None`` and
call it inside a step, so that a cancel stops them promptly.
"""
from __future__ import annotations

from typing import Callable, Optional

StepCallback = Callable[[int, int], None]
# A cancel check: ``check()`` raises to stop. Loops call it inside a step (every optimiser iteration,
# before every model call) so that a cancel does not wait for the step to end; nodes pass
# nodes/_comfy.py check_interrupted.
Check = Callable[[], None]


def tqdm_callback(desc: str = "", total: int | None = None) -> StepCallback:
    from tqdm.auto import tqdm

    bar = None

    def cb(step: int, n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total or n, desc=desc, leave=False)
        bar.n = step
        bar.refresh()
        if step >= n:
            bar.close()

    return cb


def report(callback: Optional[StepCallback], step: int, total: int) -> None:
    if callback is not None:
        callback(step, total)


def poll(check: Optional[Check]) -> None:
    if check is not None:
        check()
