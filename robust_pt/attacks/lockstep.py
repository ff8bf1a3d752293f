"""Run many sequential searches in lockstep so that their model queries share one batch.

Why: TextAttack's searches are sequential Python loops, one example at a time, and each
asks the model about a handful of candidate texts per step; a few rows per forward pass
waste most of it. Here every example's attack runs in its own thread, but the threads
take turns: exactly one runs at a time, in a fixed order, until it asks for model
scores (or finishes); when all have asked, the coordinator scores every request in one
batched call and the round repeats. So the model sees one large batch per search step
instead of one small batch per example and step.

Results do not depend on the batching: only one thread runs at a time, always in the
same order, and each job gets its own random stream (python's `random` and numpy's
global generator, which TextAttack's random transformations use), saved and restored
around its turns, so a job draws exactly what it would draw if run alone.
"""

from __future__ import annotations

import random
import threading
from typing import Any, Callable, Sequence

import numpy as np


class _Abort(BaseException):
    """Raised inside a job's thread when another job failed (not an Exception: nothing catches it)."""


class _Job:
    def __init__(self, index: int, fn: Callable[[], Any], seed: int):
        self.index, self.fn = index, fn
        self.wake = threading.Event()
        self.request: Any = None  # what it waits for the scores of
        self.reply: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        rs = random.Random(seed)
        self.py_state = rs.getstate()
        self.np_state = np.random.RandomState(seed % (2**32)).get_state()
        self.thread: threading.Thread | None = None


class Lockstep:
    """`run(fns, seeds, score)`: run each fn() to completion; fns call `ask(request)` for model scores.

    score(list of (job index, request)) -> list of replies, called with every pending
    request of a round at once. Not re-entrant: one `run` at a time per Lockstep.
    """

    def __init__(self):
        self._local = threading.local()
        self._turn_over = threading.Event()
        self._abort = False

    def ask(self, request: Any) -> Any:
        """Called from inside a job: hand `request` to the coordinator, wait for the reply."""
        job: _Job | None = getattr(self._local, "job", None)
        if job is None:
            raise RuntimeError("Lockstep.ask called outside a lockstep job")
        job.request = request
        self._yield(job)
        reply, job.reply = job.reply, None
        return reply

    @property
    def inside(self) -> bool:
        return getattr(self._local, "job", None) is not None

    def _yield(self, job: _Job) -> None:
        job.py_state, job.np_state = random.getstate(), np.random.get_state()
        job.wake.clear()
        self._turn_over.set()
        job.wake.wait()
        if self._abort:
            raise _Abort()
        random.setstate(job.py_state)
        np.random.set_state(job.np_state)

    def _body(self, job: _Job) -> None:
        self._local.job = job
        try:
            job.wake.wait()
            if self._abort:
                raise _Abort()
            random.setstate(job.py_state)
            np.random.set_state(job.np_state)
            job.result = job.fn()
        except _Abort:
            pass
        except BaseException as err:  # handed to the coordinator, re-raised there
            job.error = err
        finally:
            job.done = True
            self._local.job = None
            self._turn_over.set()

    def _turn(self, job: _Job) -> None:
        """Let `job` run until it asks for scores or ends."""
        self._turn_over.clear()
        if job.thread is None:
            job.thread = threading.Thread(target=self._body, args=(job,), daemon=True)
            job.thread.start()
        job.wake.set()
        self._turn_over.wait()

    def run(
        self,
        fns: Sequence[Callable[[], Any]],
        seeds: Sequence[int],
        score: Callable[[list[tuple[int, Any]]], list[Any]],
    ) -> list[Any]:
        jobs = [_Job(i, fn, int(s)) for i, (fn, s) in enumerate(zip(fns, seeds))]
        py_state, np_state = random.getstate(), np.random.get_state()
        self._abort = False
        try:
            while True:
                for job in jobs:
                    if not job.done:
                        self._turn(job)
                        if job.error is not None:
                            raise job.error
                waiting = [j for j in jobs if not j.done]
                if not waiting:
                    break
                replies = score([(j.index, j.request) for j in waiting])
                for j, r in zip(waiting, replies):
                    j.reply, j.request = r, None
        finally:
            if any(not j.done for j in jobs):
                self._abort = True
                for j in jobs:
                    j.wake.set()
                for j in jobs:
                    if j.thread is not None:
                        j.thread.join(timeout=5)
            random.setstate(py_state)
            np.random.set_state(np_state)
        return [j.result for j in jobs]
