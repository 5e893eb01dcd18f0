"""The machine side of :mod:`firmware_models.port`.

:class:`SimPort` is the one implementation of the port.  The machine wires
its hooks (interrupt sink, PC provider, reset requester); a unit test builds
it bare and inspects what the model asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.core.time import Scheduler, TimerEntry
from firmware_models.port import Clocks

log = logging.getLogger("emulator.unmodelled")


class StrictModeError(Exception):
    """An unmodelled register was touched while running with --strict."""


@dataclass
class Event:
    time_ns: int
    kind: str
    pc: int
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time_ns": self.time_ns, "kind": self.kind, "pc": self.pc, **self.data}


class SimPort:
    def __init__(self, scheduler: Scheduler | None = None, strict: bool = False) -> None:
        self.scheduler = scheduler or Scheduler()
        self.strict = strict
        self.clocks = Clocks()
        self.events: list[Event] = []
        self.irq_levels: dict[int, bool] = {}
        self.unmodelled_seen: dict[tuple[str, int], int] = {}
        self.guest_errors: list[tuple[str, str]] = []
        self.reset_requests: list[str] = []
        self.stalled_until_ns = 0
        # Hooks the machine replaces.
        self.irq_sink: Callable[[int, bool], None] | None = None
        self.pc_provider: Callable[[], int] = lambda: 0
        self.reset_sink: Callable[[str], None] | None = None
        self.clock_listeners: list[Callable[[], None]] = []

    def now_ns(self) -> int:
        return self.scheduler.now_ns

    def schedule(self, delay_ns: int, callback: Callable[[], None], name: str = "") -> TimerEntry:
        return self.scheduler.schedule(delay_ns, callback, name)

    def cancel(self, timer: TimerEntry) -> None:
        self.scheduler.cancel(timer)

    def set_irq(self, irq: int, asserted: bool) -> None:
        self.irq_levels[irq] = asserted
        if self.irq_sink is not None:
            self.irq_sink(irq, asserted)

    def event(self, kind: str, **data: Any) -> None:
        self.events.append(Event(self.scheduler.now_ns, kind, self.pc(), data))

    def unmodelled(self, periph: str, offset: int, access: str, size: int, value: int | None) -> None:
        key = (periph, offset)
        first = key not in self.unmodelled_seen
        self.unmodelled_seen[key] = self.unmodelled_seen.get(key, 0) + 1
        what = f"unmodelled {access} of {periph}+0x{offset:03X} ({size} bytes) at pc=0x{self.pc():08X}"
        if self.strict:
            raise StrictModeError(what)
        if first:
            log.warning(what)
            self.event("unmodelled", periph=periph, offset=offset, access=access, size=size)

    def guest_error(self, periph: str, message: str) -> None:
        self.guest_errors.append((periph, message))
        self.event("guest_error", periph=periph, message=message)

    def pc(self) -> int:
        return self.pc_provider()

    def request_reset(self, cause: str) -> None:
        self.reset_requests.append(cause)
        if self.reset_sink is not None:
            self.reset_sink(cause)

    def clocks_changed(self) -> None:
        for listener in self.clock_listeners:
            listener()

    def stall_until(self, due_ns: int) -> None:
        self.stalled_until_ns = max(self.stalled_until_ns, due_ns)

    # -- helpers for tests -------------------------------------------------------
    def advance(self, ns: int) -> None:
        """Move time forward by ``ns`` and run what falls due, as the machine would."""
        target = self.scheduler.now_ns + ns
        while True:
            due = self.scheduler.next_due()
            if due is None or due > target:
                break
            self.scheduler.advance_to(due, self.clocks.hclk)
            self.scheduler.run_due()
        self.scheduler.advance_to(target, self.clocks.hclk)
