"""File events as hints: watchdog (inotify, or polling for network mounts) into a queue."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver


@dataclass(frozen=True)
class Hint:
    """Something may have changed at ``relative`` in source ``source``."""

    source: str
    relative: str


class _Handler(FileSystemEventHandler):
    def __init__(self, source: str, root: Path, hints: queue.SimpleQueue[Hint]) -> None:
        self._source = source
        self._root = root
        self._hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(raw if isinstance(raw, str) else raw.decode())
            try:
                relative = path.relative_to(self._root).as_posix()
            except ValueError:
                continue
            self._hints.put(Hint(self._source, relative))


class Watcher:
    """Watch source folders; ``hints`` fills with paths worth a look.  Never required:
    the reconcile scan finds whatever events missed."""

    def __init__(self) -> None:
        self.hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
        self._observers: list[Observer] = []  # type: ignore[valid-type]

    def watch(self, source: str, root: Path, *, poll: bool, poll_interval: float = 5.0) -> None:
        observer = PollingObserver(timeout=poll_interval) if poll else Observer()
        observer.schedule(_Handler(source, root, self.hints), str(root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observers.append(observer)

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()  # type: ignore[attr-defined]
        for observer in self._observers:
            observer.join(timeout=5)  # type: ignore[attr-defined]
        self._observers.clear()
