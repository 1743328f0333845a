"""One pending wake-up of Snakemake's job scheduler at a time, instead of one more per event.

Snakemake's scheduler loop (snakemake.scheduling.job_scheduler.JobScheduler.schedule, 9.x) ends each pass by
starting a timer that wakes it again after the job-rate limit's timespan (`--max-jobs-per-timespan`, 1 s by
default), and every job that finishes wakes it too. Each wake-up starts a new timer, so every finished job adds a
chain of wake-ups that never ends: after n jobs the loop runs about n times a second, each pass checking the size of
every input of every waiting job. In the demo's run (180 jobs) that came to 62,524 passes, the run's own process
busy on one of the two cores for minutes (docs/measured/speed.md; upstream: snakemake/snakemake pull request
#3744). `coalesce` makes a wake-up asked for while one is pending a no-op: the loop still wakes within the timespan
of any request, and at once when a job finishes.
"""

from __future__ import annotations

import threading
from typing import Any

_MARK = "_asrmerge_single_wakeup"  # on the installed method
_PENDING = "_asrmerge_wakeup_pending"  # on the scheduler, while its timer runs


def coalesce() -> bool:
    """Install the single pending wake-up on Snakemake's scheduler; False when this Snakemake has no such method (it
    then keeps its own)."""
    from snakemake.scheduling import job_scheduler

    scheduler = job_scheduler.JobScheduler
    original = getattr(scheduler, "_schedule_reevalutation", None)  # sic: Snakemake's spelling
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True
    lock = threading.Lock()

    def schedule_reevaluation(self: Any, delay: float) -> None:
        with lock:
            if getattr(self, _PENDING, False):
                return
            setattr(self, _PENDING, True)

        def wake() -> None:
            with lock:
                setattr(self, _PENDING, False)
            self._open_jobs.release()

        timer = threading.Timer(delay, wake)
        timer.daemon = True  # a wake-up due after the run has ended does not hold the process
        timer.start()

    setattr(schedule_reevaluation, _MARK, True)
    scheduler._schedule_reevalutation = schedule_reevaluation
    return True
