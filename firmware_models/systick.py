"""SysTick timer at 0xE000E010 (ARMv7-M B3.3, PM0056 §4.5).

The counter is not ticked one by one: its value is computed from emulated
time since the last reload, and only the wrap is a scheduled event.  On the
STM32F1 the external reference clock (CLKSOURCE=0) is HCLK/8 (RM0008 §7.2),
and CALIB reads 9000 = 1 ms at 72 MHz / 8 (PM0056 §4.5.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Access, Peripheral, Register, fields

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

NS = 1_000_000_000


class SysTick(Peripheral):
    NAME = "SysTick"
    SIZE = 0x10
    REGISTERS = (
        Register("CTRL", 0x0, fields=fields(("ENABLE", 0), ("TICKINT", 1), ("CLKSOURCE", 2),
                                            ("COUNTFLAG", 16, 1, Access.RO)),
                 on_read="_read_ctrl", on_write="_write_ctrl"),
        Register("LOAD", 0x4, fields=fields(("RELOAD", 0, 24)), on_write="_write_load"),
        Register("VAL", 0x8, fields=fields(("CURRENT", 0, 24)), on_read="_read_val", on_write="_write_val"),
        Register("CALIB", 0xC, 0x00002328, access=Access.RO),
    )

    def __init__(self, port: Port, pend: Callable[[], None]) -> None:
        self._pend = pend
        self._timer: Timer | None = None
        self._epoch_ns = 0  # time at which the counter held _epoch_value
        self._epoch_value = 0
        super().__init__(port)
        port_listeners = getattr(port, "clock_listeners", None)
        if port_listeners is not None:
            port_listeners.append(self._clock_changed)

    def reset(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self.port.cancel(self._timer)
        self._timer = None
        self._epoch_ns = 0
        self._epoch_value = 0
        super().reset()

    # -- clock -----------------------------------------------------------------------
    def tick_hz(self) -> int:
        hclk = self.port.clocks.hclk
        return hclk if self.field("CTRL", "CLKSOURCE") else hclk // 8

    def _running(self) -> bool:
        return bool(self.field("CTRL", "ENABLE")) and self["LOAD"] != 0

    def _ticks_since_epoch(self) -> int:
        return (self.port.now_ns() - self._epoch_ns) * self.tick_hz() // NS

    def current(self) -> int:
        if not self._running():
            return self._epoch_value
        ticks = self._ticks_since_epoch()
        if ticks <= self._epoch_value:
            return self._epoch_value - ticks
        period = self["LOAD"] + 1
        return self["LOAD"] - (ticks - self._epoch_value - 1) % period

    def _set_epoch(self, value: int) -> None:
        self._epoch_ns = self.port.now_ns()
        self._epoch_value = value
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self.port.cancel(self._timer)
            self._timer = None
        if not self._running():
            return
        # COUNTFLAG and the interrupt come when the counter goes from 1 to 0; from 0
        # the next tick reloads LOAD, so a counter at 0 reaches 0 again LOAD+1 ticks later
        # (B3.3.1).
        value = self.current()
        ticks = value if value > 0 else self["LOAD"] + 1
        delay = -(-ticks * NS // self.tick_hz())
        self._timer = self.port.schedule(delay, self._reached_zero, "systick")

    def _reached_zero(self) -> None:
        # Once per tick of a running SysTick (1 kHz in most firmware): the register fields by
        # their bits (CTRL: ENABLE 0, TICKINT 1, CLKSOURCE 2, COUNTFLAG 16).
        self._timer = None
        values = self.values
        values["CTRL"] |= 1 << 16
        self._epoch_ns = self.port.now_ns()
        self._epoch_value = 0
        if values["CTRL"] & 2:
            self._pend()
        ctrl, load = values["CTRL"], values["LOAD"]
        if self._timer is not None or not (ctrl & 1 and load):
            self._reschedule()  # changed by what the pend set off, or stopped: the general path
            return
        # The counter is at 0 now: it reaches 0 again LOAD+1 ticks later (B3.3.1), as
        # _reschedule finds.
        hclk = self.port.clocks.hclk
        hz = hclk if ctrl & 4 else hclk // 8
        self._timer = self.port.schedule(-(-(load + 1) * NS // hz), self._reached_zero, "systick")

    def _clock_changed(self) -> None:
        if self._running():
            self._set_epoch(self.current())

    # -- registers ----------------------------------------------------------------------
    def _read_ctrl(self) -> int:
        value = self["CTRL"]
        self.set_field("CTRL", "COUNTFLAG", 0)  # reading CTRL clears COUNTFLAG (B3.3.3)
        return value

    def _write_ctrl(self, old: int, new: int, raw: int) -> None:
        was_running = bool(old & 1) and self["LOAD"] != 0
        frozen = self.current() if was_running else self._epoch_value
        if not was_running and new & 1:
            # Enabling loads the counter from LOAD on the first tick when it reads 0 (B3.3.1).
            frozen = self._epoch_value
        self._epoch_value = frozen
        self._epoch_ns = self.port.now_ns()
        self._reschedule()

    def _write_load(self, old: int, new: int, raw: int) -> None:
        self._reschedule()

    def _read_val(self) -> int:
        return self.current()

    def _write_val(self, old: int, new: int, raw: int) -> None:
        # Any write clears the counter to 0 and COUNTFLAG (B3.3.5).
        self["VAL"] = 0
        self.set_field("CTRL", "COUNTFLAG", 0)
        self._set_epoch(0)
