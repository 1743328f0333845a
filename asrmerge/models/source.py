"""Where a model or dataset named by the user lives: a local folder or a hub id, told apart before anything is loaded.

Light (no torch): the config check and the loaders share it, so a folder that is missing is reported as missing at
once instead of being looked up on the hub.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The hub's `owner/name` form (every released Whisper has an owner: `openai/whisper-base`).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_hub_id(source: str, workdir: str | Path = ".") -> bool:
    """Whether `source` names a model on the hub rather than a local folder: it has the hub's `owner/name` form, is
    not a path that exists or is written as one (`./`, `/`, `~`), and its owner is not a local folder (`models/ft`
    beside a `models/` folder is a missing local folder, not a hub id)."""
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        return False
    workdir = Path(workdir)
    return not (workdir / source).exists() and not (workdir / source.split("/")[0]).exists()
