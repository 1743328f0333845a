"""Progress lines of long loops: rate and time left from the items done in this run."""
from asrmerge.progress import Progress


def test_progress_reports_rate_and_time_left_from_this_runs_items():
    now = [100.0]
    progress = Progress(1500, done_before=100, clock=lambda: now[0])
    assert progress(100) == "100/1500"  # nothing done yet in this run: no rate
    now[0] += 50.0
    assert progress(120) == "120/1500, 2.5 s each, 57 min 30 s left"
    now[0] += 3400.0
    assert progress(1480) == "1480/1500, 2.5 s each, 50 s left"
    assert Progress(2, clock=lambda: 0.0)(2).endswith("0 s left")
