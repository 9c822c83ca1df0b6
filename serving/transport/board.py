"""How many connections each worker of a server holds, so a new one goes where there are fewer.

All workers wait on one listening socket and the first to wake takes a new connection. With
keep-alive clients (a service's connection pool, a load generator), the connections opened
together often all land in one worker, which then does all the work while the others idle.
A worker that holds more connections than another waits a moment before accepting (longer
the more it holds), so the one with fewer takes it first; if none does, it takes the
connection itself after the pause, so no connection waits more than MAX_ACCEPT_PAUSE.
"""

from __future__ import annotations

import mmap

PAUSE_PER_CONNECTION = 0.001  # seconds of accept pause per connection more than another's
MAX_ACCEPT_PAUSE = 0.01
# After a pause, a connection taken within this window is the one that was waiting.
RESUMED_WINDOW = 0.02


class ConnectionBoard:
    """Connection counts per worker, in memory the workers share.

    The gunicorn arbiter makes it before forking any worker and gives each worker a slot
    (worker objects are built in the arbiter, one at a time); a worker writes its own count
    and reads the others'. A slot is free again when its worker exits."""

    SLOTS = 128

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, self.SLOTS * 8)
        self._cells = memoryview(self._memory).cast("i")  # (in use, connections) per slot

    def claim(self) -> int:
        for slot in range(self.SLOTS):
            if not self._cells[2 * slot]:
                self._cells[2 * slot] = 1
                self._cells[2 * slot + 1] = 0
                return slot
        return -1  # more workers than slots: that worker balances against no one

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._cells[2 * slot] = 0

    def publish(self, slot: int, connections: int) -> None:
        if slot >= 0:
            self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections another live worker holds (None: no other worker)."""
        cells = self._cells
        counts = [
            cells[2 * other + 1]
            for other in range(self.SLOTS)
            if other != slot and cells[2 * other]
        ]
        return min(counts) if counts else None


def accept_pause(held: int, fewest_elsewhere: int | None) -> float:
    """Seconds to wait before taking a connection: 0 unless another worker holds fewer."""
    if fewest_elsewhere is None or held <= fewest_elsewhere:
        return 0.0
    return min(MAX_ACCEPT_PAUSE, PAUSE_PER_CONNECTION * (held - fewest_elsewhere))
