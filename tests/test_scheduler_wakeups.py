"""Snakemake's scheduler wakes once per pending wake-up, however many are asked for (asrmerge.workflow.scheduler_wakeups)."""
import threading
import time
from types import SimpleNamespace

from asrmerge.workflow import scheduler_wakeups


def wake_ups(scheduler: SimpleNamespace, within: float = 0.5) -> int:
    time.sleep(within)
    count = 0
    while scheduler._open_jobs.acquire(blocking=False):
        count += 1
    return count


def test_wake_ups_asked_for_while_one_is_pending_are_one():
    assert scheduler_wakeups.coalesce()  # this Snakemake has the method it replaces
    assert scheduler_wakeups.coalesce()  # and installing twice is once
    from snakemake.scheduling.job_scheduler import JobScheduler

    scheduler = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    other = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    for _ in range(50):
        JobScheduler._schedule_reevalutation(scheduler, 0.05)
    JobScheduler._schedule_reevalutation(other, 0.05)
    assert wake_ups(scheduler) == 1 and wake_ups(other, 0) == 1
    # once it has woken the loop, the next request wakes it again
    JobScheduler._schedule_reevalutation(scheduler, 0.05)
    assert wake_ups(scheduler) == 1
