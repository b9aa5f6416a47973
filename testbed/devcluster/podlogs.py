"""TEST INFRASTRUCTURE — pod logs of a namespace, copied from the node while a test runs.

The kubelet deletes a pod's log files with the pod, so a test that wants to
read what a deleted worker printed while it stopped collects them as they are
written: a thread follows every `<namespace>_<pod>_<uid>/<container>/N.log`
under the kubelet's podLogsDir (CRI format: `time stream tag message`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

POLL = 0.1


class PodLogs:
    def __init__(self, logs_dir: Path, namespace: str) -> None:
        self.logs_dir = logs_dir
        self.namespace = namespace
        self._offsets: dict[Path, int] = {}
        self._lines: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def lines(self) -> dict[str, list[str]]:
        """Messages per pod name, in order (a last poll first)."""
        self._poll()
        return {pod: list(lines) for pod, lines in self._lines.items()}

    def _follow(self) -> None:
        while not self._stop.wait(POLL):
            self._poll()

    def _poll(self) -> None:
        for path in sorted(self.logs_dir.glob(f"{self.namespace}_*/*/*.log")):
            pod = path.parent.parent.name.split("_")[1]
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets.get(path, 0))
                    chunk = f.read()
            except OSError:  # deleted with its pod between glob and open
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = self._offsets.get(path, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                self._lines.setdefault(pod, []).append(line.split(" ", 3)[-1])

    def start(self) -> PodLogs:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> PodLogs:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
