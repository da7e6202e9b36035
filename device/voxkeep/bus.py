"""Fan-out of events to observers, each on its own thread behind its own bounded queue.

The audio loop publishes and moves on: a slow observer (an SD card, a dead broker, a GPIO driver)
fills only its own queue. With live audio a full queue drops the event for that observer and counts
it; with file input nothing is real-time, so ``publish`` waits instead and every event is delivered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .events import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]
_STOP = object()


class _Subscriber:
    def __init__(self, name: str, handler: Handler, maxsize: int) -> None:
        self.name = name
        self.handler = handler
        self.queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=f"observer-{name}", daemon=True)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is _STOP:
                    return
                self.handler(item)  # type: ignore[arg-type]
            except Exception:
                # One observer's bug must not silence the others or the audio loop.
                log.exception("observer %s failed on an event", self.name)
            finally:
                self.queue.task_done()


class EventBus:
    """Publish events to every subscriber without ever waiting on one (in live mode)."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self._subs: list[_Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, name: str, handler: Handler, maxsize: int = 256) -> None:
        """Run ``handler`` on its own thread for every event published from now on."""
        sub = _Subscriber(name, handler, maxsize)
        with self._lock:
            self._subs.append(sub)
        sub.thread.start()

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; thread-safe."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if self.live:
                try:
                    sub.queue.put_nowait(event)
                except queue.Full:
                    sub.dropped += 1
            else:
                sub.queue.put(event)

    def drain(self) -> None:
        """Wait until every event published so far has been handled (simulations read the LED after it)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.queue.join()

    def dropped(self) -> dict[str, int]:
        """Events each observer lost to a full queue."""
        return {s.name: s.dropped for s in self._subs if s.dropped}

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop every observer thread."""
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.queue.put(_STOP)
        for sub in subs:
            sub.thread.join(timeout)
            if sub.thread.is_alive():
                log.warning("observer %s did not finish within %.0f s", sub.name, timeout)
