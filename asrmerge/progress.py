"""Progress of a long loop in a job's log: how far, how fast, how long still (jobs log to files, where a progress
bar would be a stream of carriage returns)."""

from __future__ import annotations

import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """`progress(done)` -> "120/1500, 2.41 s each, 55 min 26 s left": the rate over the items done since this object
    was made (`done_before` of them were done earlier, e.g. by a run that is being resumed)."""

    def __init__(self, total: int, done_before: int = 0, clock=time.monotonic):
        self.total, self.done_before, self.clock = total, done_before, clock
        self.started = clock()

    def __call__(self, done: int) -> str:
        here = done - self.done_before
        if here <= 0:
            return f"{done}/{self.total}"
        each = (self.clock() - self.started) / here
        return f"{done}/{self.total}, {each:.3g} s each, {_duration(each * (self.total - done))} left"
