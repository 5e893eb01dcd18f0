"""A debugging session: GDB's connection, and the machine halted under its control.

The session listens before anything runs; the machine calls it at the top of every pass of
its run loop (``Machine.supervisor``), between two instructions.  The first call waits for the
debugger (as QEMU's ``-s -S``); later calls report a stop a hook asked for (breakpoint,
watchpoint, step, the jump), a fault the core took, or Ctrl-C, and then serve the debugger
until it lets the target run.  While it is served nothing else happens: emulated time stands
still and whoever drives the machine (the USB host of ``flash`` and ``serve``) waits inside its
``run`` call, so a session that only continues changes nothing the firmware or the host sees.

End of the session: ``detach`` (GDB's ``detach``, or quitting a batch GDB) removes every hook
and lets the run finish as it would have without a debugger.  A debugger that disconnects
without detaching, or kills (``k``), stops the run: :class:`DebuggerGone`, one line, exit 1.
When the run itself ends, the debugger gets ``W`` with the command's exit code; a run that
ended on a fault, lockup or hang is first reported as a SIGSEGV stop naming why.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from emulator.core.arguments import parse_pin_setting
from emulator.core.machine import EmulatorError, Machine, StopReason
from emulator.core.session import BOOT1_PIN, Board
from emulator.gdb.jump import jump_state_text
from emulator.gdb.machine_target import MachineTarget
from emulator.gdb.server import SIGINT, SIGSEGV, SIGTRAP, Connection, Stop

DEFAULT_HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.02
MONITOR_HELP = """monitor commands:
  reset [halt]         system reset now (SYSRESETREQ); the core stays halted at the reset handler
  boot1 high|low       drive BOOT1 (PB2) from outside
  pin PXn high|low     drive a GPIO pin from outside, e.g. pin PA0 high
  power-cut            cut the supply now and restore it: the board boots from the flash that is left
  time                 emulated time, instructions and cycles so far
  events [N]           the last N boot-flow events (default 10)
  findings             the jump checks so far (flash: on the downloaded application)
  help                 this list"""


class DebuggerGone(Exception):
    """The debugger disconnected or killed the session mid-run (one line for the user)."""


def parse_gdb_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); 127.0.0.1 unless a host is given; port 0 = any free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(f"--gdb wants [HOST:]PORT, e.g. 3333 or 127.0.0.1:3333, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--gdb: TCP ports are 0..65535 (0 = any free port), not {port}")
    return host, port


class DebugSession:
    def __init__(self, host: str, port: int, *, out: TextIO | None = None) -> None:
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
            self.listener.listen(1)
        except OSError as e:
            self.listener.close()
            raise EmulatorError(f"--gdb {host}:{port}: cannot listen there: {e.strerror or e}") from None
        self.host, self.port = host, self.listener.getsockname()[1]
        self.out = out or sys.stderr
        self.conn: Connection | None = None
        self.target: MachineTarget | None = None
        self.machine: Machine | None = None
        self.board: Board | None = None
        self.outcome: Any = None  # the flash flow's FlashOutcome, for `monitor findings`
        self.findings: Callable[[Any], list[str]] | None = None
        self.detached = False
        self.exec_file: str | None = None
        self._faults_seen = 0
        self._next_poll = 0.0

    def announce(self) -> None:
        print(f"gdb: waiting for a debugger on {self.host}:{self.port} "
              f"(gdb-multiarch -ex 'target remote {self.host}:{self.port}')", file=self.out, flush=True)

    # -- attaching to a machine -----------------------------------------------------------------
    def attach(self, board: Board) -> None:
        """Put the machine under the debugger: it waits for the connection before its first instruction."""
        m = board.machine
        self.board, self.machine = board, m
        first = board.layout.images[0] if board.layout.images else None
        if first is not None and first.kind == "elf":
            self.exec_file = str(Path(first.path).resolve())
        self.target = MachineTarget(m, monitor=self.monitor)
        self._faults_seen = len(m.faults)
        m.supervisor = self._supervise

    def break_at(self, address: int, why: str) -> None:
        """Halt the first time the CPU reaches ``address``, with the jump state on the console."""
        assert self.target is not None and self.machine is not None
        m = self.machine
        self.target.add_one_shot(address, lambda: jump_state_text(m, address & ~1, why))

    def break_on_jump_event(self) -> None:
        """Halt where the flash flow logs its ``jump`` event: the application's first instruction."""
        assert self.target is not None and self.machine is not None
        m, target = self.machine, self.target
        port = m.port
        original = port.event
        armed = [True]

        def event(kind: str, **data: Any) -> None:
            original(kind, **data)
            if kind == "jump" and armed[0] and not self.detached:
                armed[0] = False
                address = data["address"] & ~1
                # The flow's hook runs in front of that instruction: stop there (not executed).
                target.stop_here(address, Stop(SIGTRAP))
                # Described once halted, when the instruction count is complete (not mid-slice).
                target.describe_stop = lambda: jump_state_text(m, address, "the bootloader's jump")
        port.event = event  # type: ignore[method-assign]

    # -- the machine's supervisor ------------------------------------------------------------
    def _supervise(self) -> None:
        m, t = self.machine, self.target
        assert m is not None and t is not None
        if self.conn is None:
            self._accept()
            self._halt(None)
            return
        stop = t.stop_pending
        if stop is not None and t.describe_stop is not None:
            stop.message, t.describe_stop = t.describe_stop(), None
        if stop is None and len(m.faults) > self._faults_seen:
            stop = t.fault_stop(len(m.faults) - 1)  # halted at the handler's first instruction (vector catch)
        self._faults_seen = len(m.faults)
        if stop is None and t.stepping and t.step_done():
            stop = Stop(SIGTRAP)
        if stop is None:
            # Ctrl-C is looked for at most every POLL_INTERVAL_S of wall time (a recv costs ~9 us,
            # a pass of the loop a few); when it is seen never changes what the firmware does.
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + POLL_INTERVAL_S
                try:
                    if self.conn.interrupted():
                        stop = Stop(SIGINT)
                except OSError:
                    self._gone()
        if stop is not None:
            self._halt(stop)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError as e:
            raise DebuggerGone(f"--gdb: waiting for a debugger failed: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.target is not None
        self.conn = Connection(sock, self.target)
        self.conn.stub.exec_file = self.exec_file

    def _halt(self, stop: Stop | None) -> None:
        m, t, conn = self.machine, self.target, self.conn
        assert m is not None and t is not None and conn is not None
        t.stop_pending = None
        t.end_step()
        t.skip_once = None
        try:
            if stop is not None:
                conn.stub.report_stop(stop)
            while True:
                t.tidy()
                action = conn.serve()
                if action in ("continue", "step"):
                    break
                if action == "detach":
                    self._detach()
                    return
                if action == "kill":
                    self._close()
                    raise DebuggerGone(f"the debugger ended the session (kill) at {m.symbol(m.pc & ~1)}; "
                                       "the run stopped there")
                self._gone()
        except OSError:
            self._gone()
        self._next_poll = 0.0  # a Ctrl-C sent with the resuming packet is seen at once
        pc = m.pc & ~1
        if pc in t.breakpoints or pc in t.one_shot:
            t.skip_once = pc  # resuming from a breakpoint: the instruction there runs
        if action == "step":
            t.begin_step()

    def _gone(self) -> None:
        m = self.machine
        where = "" if m is None else f" at {m.symbol(m.pc & ~1)}, {m.now_ns / 1e6:.3f} ms emulated"
        self._close()
        raise DebuggerGone(f"the debugger disconnected without detaching{where}; the run stopped there")

    def _detach(self) -> None:
        if self.target is not None:
            self.target.clear_points()
        if self.machine is not None:
            self.machine.supervisor = None
        self.detached = True
        self._close()

    def close(self) -> None:
        """Close the connection and the listening socket (idempotent)."""
        self._close()

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.close()
        with contextlib.suppress(OSError):
            self.listener.close()

    def finish(self, exit_code: int, stop: StopReason | None = None) -> None:
        """The run ended: tell the debugger (a last stop when it ended badly, then ``W``) and close."""
        if self.detached or self.conn is None:
            self._close()
            return
        conn, t = self.conn, self.target
        assert t is not None
        try:
            if stop is not None and not stop.clean:
                t.clear_points()
                conn.stub.report_stop(Stop(SIGSEGV, message=f"the run ended: {stop.kind}: {stop.detail}"))
                action = conn.serve()
                if action in ("detach", "gone", "kill"):
                    self._close()
                    return
            conn.stub.report_stop(Stop(exited=exit_code))
        except OSError:
            pass
        self._close()

    # -- monitor ---------------------------------------------------------------------------
    def monitor(self, command: str) -> str:
        m = self.machine
        assert m is not None
        words = command.split()
        if not words or words[0] == "help":
            return MONITOR_HELP
        name, args = words[0].lower(), [w.lower() for w in words[1:]]
        try:
            handler = _MONITOR[name]
        except KeyError:
            return f"unknown monitor command {name!r}\n{MONITOR_HELP}"
        try:
            return handler(self, m, args)
        except (ValueError, EmulatorError) as e:
            return f"monitor {name}: {e}"


def _level(text: str) -> bool:
    if text in ("high", "1", "h"):
        return True
    if text in ("low", "0", "l"):
        return False
    raise ValueError(f"a level is high or low, not {text!r}")


def _reset(session: DebugSession, m: Machine, args: list[str]) -> str:
    if args not in ([], ["halt"]):
        raise ValueError("usage: monitor reset [halt]")
    m.system_reset("software")
    m.loops.forget_passes()
    return (f"system reset (SYSRESETREQ): halted at the reset handler {m.symbol(m.pc & ~1)}, MSP 0x{m.reg('msp'):08X}"
            " (GDB's cached registers are stale: `flushregs` or `stepi`)")


def _boot1(session: DebugSession, m: Machine, args: list[str]) -> str:
    if len(args) != 1:
        raise ValueError("usage: monitor boot1 high|low")
    level = _level(args[0])
    m.drive_pin(*BOOT1_PIN, level)
    return f"BOOT1 (PB2) driven {'high' if level else 'low'}"


def _pin(session: DebugSession, m: Machine, args: list[str]) -> str:
    if len(args) != 2:
        raise ValueError("usage: monitor pin PXn high|low")
    try:
        port, pin, level = parse_pin_setting(f"{args[0]}={args[1]}")
    except Exception as e:  # noqa: BLE001 - argparse's error type: one line either way
        raise ValueError(str(e)) from None
    m.drive_pin(port, pin, level)
    return f"P{port}{pin} driven {'high' if level else 'low'}"


def _power_cut(session: DebugSession, m: Machine, args: list[str]) -> str:
    m.power_cut()
    m.power_on()
    m.loops.forget_passes()
    return (f"power cut at {m.now_ns / 1e6:.3f} ms and restored: halted at the reset handler "
            f"{m.symbol(m.pc & ~1)} (`flushregs` to see it)")


def _time(session: DebugSession, m: Machine, args: list[str]) -> str:
    return (f"emulated time {m.now_ns} ns ({m.now_ns / 1e6:.6f} ms), {m.instructions} instructions, "
            f"{m.scheduler.cycles} cycles, HCLK {m.port.clocks.hclk / 1e6:g} MHz")


def _events(session: DebugSession, m: Machine, args: list[str]) -> str:
    n = int(args[0]) if args else 10
    if n <= 0:
        raise ValueError("N must be 1 or more")
    rows = []
    for e in m.events[-n:]:
        data = " ".join(f"{k}={_show(v)}" for k, v in e.data.items())
        rows.append(f"{e.time_ns / 1e6:12.6f} ms  {e.kind:<24} {m.symbol(e.pc & ~1):<28} {data}".rstrip())
    return "\n".join(rows) if rows else "no events yet"


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0xFFFF:
        return f"0x{value:08X}"
    return str(value)


def _findings(session: DebugSession, m: Machine, args: list[str]) -> str:
    if session.findings is None or session.outcome is None:
        return ("the jump checks judge a downloaded application: run `flash BOOT APP --gdb ...` "
                "(here: `monitor events` shows the boot flow so far)")
    lines = session.findings(session.outcome)
    return "\n".join(lines) if lines else "no findings so far"


_MONITOR: dict[str, Callable[[DebugSession, Machine, list[str]], str]] = {
    "reset": _reset, "boot1": _boot1, "pin": _pin, "power-cut": _power_cut, "time": _time,
    "events": _events, "findings": _findings,
}
