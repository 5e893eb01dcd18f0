"""A board and a DFU host for tests: build, run until something happens, talk DFU.

The pytest plugin (:mod:`emulator.pytest_plugin`) and the conformance suite
(:mod:`emulator.conformance`) are built on this module.  It also works without pytest:

>>> board = SimBoard.build("fixtures/images/boot_fixed.elf")
>>> dfu = board.attach_dfu()              # boots, enumerates, dfuIDLE
>>> dfu.client.get_status().state         # a hostside.dfu.DfuClient
2
>>> board.run_until_uart("DFU mode")      # doctest: +SKIP

Every wait is emulated time: a run "until a UART line" with a 2 s timeout costs as little
wall time as the firmware needs to print it.  A wait that times out raises
:class:`WaitTimeout`, an ``AssertionError`` that tells what the firmware did instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from emulator.core.arguments import parse_bkp_setting, parse_duration, parse_pin_setting
from emulator.core.chips import Chip
from emulator.core.machine import Machine, StopReason
from emulator.core.port import Event
from emulator.core.session import BkpSetting, Board, BoardOptions, PinSetting, build_board
from emulator.usb.target import EmulatedTarget, attach
from hostside.dfu import DfuClient, DfuException, DfuStall, DfuStatusResponse
from hostside.selection import DfuSelector

Duration = int | str  # nanoseconds, or text such as "500ms", "2s"
SLICE_NS = 1_000_000  # with a USB host attached, time passes in 1 ms steps (SOFs, NAK retries)


class WaitTimeout(AssertionError):
    """A run until something happens ended without it (time ran out, or the firmware stopped)."""


def duration_ns(value: Duration) -> int:
    """Nanoseconds from an int or from text such as ``"500ms"`` or ``"2s"``."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a duration must be positive: {value}")
        return value
    return parse_duration(value)


def pin_settings(pins: Iterable[str | PinSetting] | dict[str, bool | str]) -> list[PinSetting]:
    """``["PA0=high"]``, ``{"PA0": True}`` or ``[("A", 0, True)]`` as pin settings."""
    if isinstance(pins, dict):
        pins = [f"{name}={'high' if level in (True, 'high', 1) else 'low'}" for name, level in pins.items()]
    return [parse_pin_setting(p) if isinstance(p, str) else p for p in pins]


def bkp_settings(bkp: Iterable[str | BkpSetting] | dict[int | str, int]) -> list[BkpSetting]:
    """``["DR1=0x4F42"]``, ``{1: 0x4F42}`` or ``[(1, 0x4F42)]`` as backup-register settings."""
    if isinstance(bkp, dict):
        bkp = [f"DR{str(n).upper().removeprefix('DR')}={value}" for n, value in bkp.items()]
    return [parse_bkp_setting(b) if isinstance(b, str) else b for b in bkp]


class SimBoard:
    """One emulated board: its machine, its USART output, its events, and waits in emulated time."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.dfu: DfuSession | None = None

    @classmethod
    def build(cls, image: str, *, chip: str | None = None, apps: Sequence[str] = (), base: int | None = None,
              boot1: bool = False, pins: Iterable[str | PinSetting] | dict[str, bool | str] = (),
              bkp: Iterable[str | BkpSetting] | dict[int | str, int] = (), flash_state: str | None = None,
              flash_timing: str = "typical", strict: bool = False) -> SimBoard:
        """Load ``image`` (and ``apps``, ``"app.bin@0x08008000"``), apply the state file, drive the
        pins, set the backup registers, power on.  Bad input raises ``EmulatorError`` (one line)."""
        options = BoardOptions(image=image, base=base, apps=list(apps), chip=chip, boot1=boot1, strict=strict,
                               flash_file=flash_state, flash_timing=flash_timing, pins=pin_settings(pins),
                               bkp=bkp_settings(bkp))
        return cls(build_board(options))

    # -- what the board did ------------------------------------------------------------------
    @property
    def machine(self) -> Machine:
        return self.board.machine

    @property
    def chip(self) -> Chip:
        return self.machine.chip

    @property
    def now_ns(self) -> int:
        return self.machine.now_ns

    def uart(self, port: int = 1) -> str:
        """Everything USART ``port`` has sent since power-on."""
        return bytes(self.machine.uart_output.get(port, b"")).decode("latin-1")

    @property
    def events(self) -> list[Event]:
        """The boot-flow events (resets, GPIO reads, flash operations, USB and DFU requests, the jump...)."""
        return self.machine.events

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.machine.events if e.kind == kind]

    @property
    def usb_attached(self) -> bool:
        """Whether the device is on the bus (pull-up on, not powered down)."""
        if self.dfu is not None:
            return self.dfu.target.attached()
        return not self.machine.usb["CNTR"] >> 1 & 1

    # -- running -------------------------------------------------------------------------------
    def run_for(self, duration: Duration) -> StopReason | None:
        """Let ``duration`` of emulated time pass.  With a DFU host attached the bus keeps running
        (SOFs every millisecond); otherwise the CPU runs alone and may stop early (idle, fault)."""
        ns = duration_ns(duration)
        if self.dfu is not None:
            self.dfu.target.link.host.advance(ns)
            return self.machine.last_stop
        return self.machine.run(max_ns=ns)

    def run_until(self, condition: Callable[[], bool], timeout: Duration = "2s", *, what: str = "the condition"
                  ) -> StopReason | None:
        """Run until ``condition()`` holds; :class:`WaitTimeout` if it does not within ``timeout``."""
        budget = duration_ns(timeout)
        deadline = self.now_ns + budget
        stop: StopReason | None = None
        if condition():
            return None
        if self.dfu is not None:
            host = self.dfu.target.link.host
            while self.now_ns < deadline and not condition():
                host.advance(min(SLICE_NS, deadline - self.now_ns))
            stop = self.machine.last_stop
        else:
            stop = self.machine.run(max_ns=deadline - self.now_ns, until=condition)
        if not condition():
            ended = "" if stop is None or stop.kind in ("time-budget", "condition") else \
                f"; the firmware stopped: {stop.kind}: {stop.detail}"
            raise WaitTimeout(f"{what} did not happen within {budget / 1e6:g} ms of emulated time{ended}; "
                              f"USART1 printed {self.uart()[-200:]!r}")
        return stop

    def run_until_uart(self, text: str, timeout: Duration = "2s", *, port: int = 1) -> str:
        """Run until USART ``port`` has printed ``text`` (after what it had printed already);
        returns everything it printed since power-on."""
        start = len(self.machine.uart_output.get(port, b""))
        needle = text.encode("latin-1")
        self.run_until(lambda: needle in bytes(self.machine.uart_output.get(port, b""))[start:], timeout,
                       what=f"USART{port} printing {text!r}")
        return self.uart(port)

    def run_until_event(self, kind: str, timeout: Duration = "2s", *,
                        where: Callable[[Event], bool] | None = None) -> Event:
        """Run until a new event of ``kind`` (matching ``where``) is recorded; returns it."""
        seen = len(self.machine.events)

        def found() -> Event | None:
            return next((e for e in self.machine.events[seen:] if e.kind == kind and (where is None or where(e))),
                        None)

        self.run_until(lambda: found() is not None, timeout, what=f"a {kind!r} event")
        event = found()
        assert event is not None
        return event

    # -- USB ----------------------------------------------------------------------------------------
    def attach_dfu(self, selector: DfuSelector | None = None, *, pcap: str | None = None,
                   attach_timeout: Duration = "2s", start: bool = True) -> DfuSession:
        """Plug the board into a virtual USB host, enumerate it and open its DFU interface (the
        first one, or the one ``selector`` names); with ``start``, bring it to dfuIDLE as dfu-util does."""
        if self.dfu is not None:
            return self.dfu
        target = attach(self.board, pcap_path=pcap, attach_timeout_ns=duration_ns(attach_timeout),
                        selector=selector)
        self.dfu = DfuSession(self, target, selector)
        if start:
            self.dfu.client.start()
        return self.dfu

    def close(self) -> None:
        """Write the USB capture (if any) and the board's state file (if any)."""
        if self.dfu is not None:
            self.dfu.target.close()
        else:
            self.board.save()


@dataclass
class RequestResult:
    """What a class request got: data, or a STALL (or another transport failure)."""

    stalled: bool
    data: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.stalled and self.error is None


class DfuSession:
    """A DFU interface of an emulated board, seen from the host: a :class:`hostside.dfu.DfuClient`
    plus requests that report a STALL instead of raising it."""

    def __init__(self, board: SimBoard, target: EmulatedTarget, selector: DfuSelector | None = None) -> None:
        self.board = board
        self.target = target
        self.selector = selector
        self.alt = target.select(selector)
        self.client = DfuClient(target.transport, self.alt)

    @property
    def functional(self) -> Any:
        """The DFU functional descriptor (``can_upload``, ``transfer_size``, ``dfu_version``...)."""
        return self.client.functional

    @property
    def is_dfuse(self) -> bool:
        return self.client.is_dfuse

    def status(self) -> DfuStatusResponse:
        """GETSTATUS, waiting the bwPollTimeout it asks for (in emulated time)."""
        st = self.client.get_status()
        self.target.wait_ms(st.poll_timeout_ms)
        return st

    def attempt(self, request: Callable[[], Any]) -> RequestResult:
        """Run one client call; a STALL or another DFU failure is returned, not raised."""
        try:
            result = request()
        except DfuStall:
            return RequestResult(True)
        except DfuException as e:
            return RequestResult(False, error=f"{type(e).__name__}: {e}")
        return RequestResult(False, result if isinstance(result, bytes) else b"")

    def wait_ms(self, ms: float) -> None:
        self.target.wait_ms(ms)

    def bus_reset(self) -> None:
        self.target.bus_reset()
