"""Starting `workerpool <command>` as a real process, the way a container would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_cli(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Its own session (so kill -9 of the group takes its children too), output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workerpool.cli", command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
