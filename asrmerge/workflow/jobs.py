"""Glue for the Snakemake rule scripts: per-job logging and the list of utterances a rule reads."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from asrmerge.data.manifest import Utterance, read_manifest
from asrmerge.guard import check_outputs


def share_package_with_jobs() -> None:
    """Put this package's folder on PYTHONPATH, so jobs in other environments (conda, cluster nodes) import it too."""
    root = str(Path(__file__).resolve().parents[1])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, *paths]))


@contextlib.contextmanager
def job_logging(log_path: str | Path, threads: int | None = None, job: Any = None) -> Iterator[logging.Logger]:
    """Send library logging (and any traceback) of one job to its log file; use at most `threads` CPU threads;
    refuse outputs that would land on the rule's inputs (`job`: the rule script's `snakemake` object;
    asrmerge.guard.check_outputs) before any work."""
    if threads:
        import torch  # only jobs that give a thread count run models

        torch.set_num_threads(threads)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger("asrmerge.job")
    try:
        if job is not None:
            check_outputs(job.input, job.output)
        yield logger
    except Exception:
        logger.exception("job failed")
        print(f"job failed, see {log_path}", file=sys.stderr)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def utterances(manifest_paths: Sequence[str | Path], split: str) -> list[Utterance]:
    """The utterances of one split across several manifests, in manifest order."""
    return [u for path in manifest_paths for u in read_manifest(path, split=split)]
