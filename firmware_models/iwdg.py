"""Independent watchdog (IWDG) of the STM32F103, RM0008 §19.

A 12-bit down-counter clocked by LSI (40 kHz nominal) through a /4../256
prescaler, modelled in emulated time: the counter is computed from the time of
the last reload, and one timer fires when it runs out, which asks the machine
for an ``iwdg`` system reset.

Keys written to KR (§19.3, §19.4.1): 0xCCCC starts the watchdog (and forces
LSI on; there is no way to stop it again short of a reset), 0x5555 enables
write access to PR and RLR, 0xAAAA reloads the counter from RLR; any other
value (including 0xAAAA) protects PR/RLR again.  A PR/RLR write takes up to 5
LSI cycles to reach the VDD domain: SR.PVU/RVU are set meanwhile, reads return
the old value, and a further write is ignored (§19.4.2–19.4.4).

Timeout (§19.3, Table 96): ``prescaler × (counter + 1) / f_LSI`` from the last
reload — e.g. PR=0, RLR=0 gives 0.1 ms, PR=6, RLR=0xFFF gives 26.2 s.

Options: ``lsi_hz`` (40 000), ``hardware`` (the WDG_SW option bit is 0: the
watchdog starts by itself after each reset), ``start_lsi`` (callable the
machine wires to ``RCC.force_lsi_on``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware_models.regs import Access, Field, Peripheral, Register

if TYPE_CHECKING:
    from firmware_models.port import Port, Timer

NS_PER_S = 1_000_000_000
KEY_START = 0xCCCC
KEY_ACCESS = 0x5555
KEY_RELOAD = 0xAAAA
UPDATE_LSI_CYCLES = 5  # "takes up to 5 RC 40 kHz cycles" (§19.4.4)


class IWDG(Peripheral):
    NAME = "IWDG"
    SIZE = 0x400

    REGISTERS = (
        Register("KR", 0x00, 0, (Field("KEY", 0, 16, Access.WO),), on_write="_kr_written"),
        Register("PR", 0x04, 0, (Field("PR", 0, 3),), on_write="_pr_written"),
        Register("RLR", 0x08, 0x0FFF, (Field("RL", 0, 12),), on_write="_rlr_written"),
        Register("SR", 0x0C, 0, (Field("PVU", 0, 1, Access.RO), Field("RVU", 1, 1, Access.RO))),
    )

    def __init__(
        self,
        port: Port,
        *,
        name: str | None = None,
        lsi_hz: int = 40_000,
        hardware: bool = False,
        start_lsi: Callable[[], None] | None = None,
    ) -> None:
        self.lsi_hz = lsi_hz
        self.hardware = hardware
        self.start_lsi = start_lsi
        self.running = False
        self.expired = False
        self._unlocked = False
        self._count_at_base = 0x0FFF
        self._base_ns = 0
        self._expiry: Timer | None = None
        self._updates: dict[str, Timer] = {}
        super().__init__(port, name)

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        if self._expiry is not None:
            self.port.cancel(self._expiry)
        for timer in self._updates.values():
            self.port.cancel(timer)
        self._expiry = None
        self._updates = {}
        self.running = False
        self.expired = False
        self._unlocked = False
        self._count_at_base = 0x0FFF  # "the counter starts counting down from the reset value of 0xFFF"
        super().reset()
        if self.hardware:
            self._start()

    @property
    def prescaler(self) -> int:
        """The divider in effect: 4 << PR, 256 for PR ≥ 6 (§19.4.2)."""
        return 4 << min(self.values["PR"] & 7, 6)

    @property
    def tick_ns(self) -> int:
        return self.prescaler * NS_PER_S // self.lsi_hz

    @property
    def counter(self) -> int:
        """The down-counter's current value."""
        if not self.running:
            return self._count_at_base
        elapsed = (self.port.now_ns() - self._base_ns) // self.tick_ns
        return max(0, self._count_at_base - elapsed)

    def timeout_ns(self) -> int | None:
        """Emulated time left until the watchdog resets the chip (None while stopped)."""
        if not self.running or self._expiry is None:
            return None
        return self._expiry.due_ns - self.port.now_ns()

    # -- counting ------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.running:
            return
        self.running = True
        self._base_ns = self.port.now_ns()
        if self.start_lsi is not None:
            self.start_lsi()
        self.port.event("iwdg_start", prescaler=self.prescaler, counter=self._count_at_base)
        self._arm()

    def _rebase(self) -> None:
        """Fold the elapsed whole ticks into the base, keeping the phase of the current tick."""
        ticks = (self.port.now_ns() - self._base_ns) // self.tick_ns
        self._count_at_base = max(0, self._count_at_base - ticks)
        self._base_ns += ticks * self.tick_ns

    def _arm(self) -> None:
        if self._expiry is not None:
            self.port.cancel(self._expiry)
        due = self._base_ns + (self._count_at_base + 1) * self.tick_ns
        self._expiry = self.port.schedule(due - self.port.now_ns(), self._expired, f"{self.name}.expiry")

    def _expired(self) -> None:
        self._expiry = None
        self.expired = True
        self._count_at_base = 0
        self.running = False
        self.port.event("iwdg_expired")
        self.port.request_reset("iwdg")

    # -- register side effects ----------------------------------------------------------------------------
    def _kr_written(self, old: int, new: int, raw: int) -> None:
        key = raw & 0xFFFF
        self.values["KR"] = 0
        self._unlocked = key == KEY_ACCESS
        if key == KEY_START:
            self._start()
        elif key == KEY_RELOAD:
            self._count_at_base = self.values["RLR"] & 0xFFF
            self._base_ns = self.port.now_ns()
            if self.running:
                self._arm()

    def _pr_written(self, old: int, new: int, raw: int) -> None:
        self._protected_write("PR", "PVU", old, new)

    def _rlr_written(self, old: int, new: int, raw: int) -> None:
        self._protected_write("RLR", "RVU", old, new)

    def _protected_write(self, reg: str, busy: str, old: int, new: int) -> None:
        self.values[reg] = old  # the VDD-domain copy changes only when the update completes
        if not self._unlocked:
            self.port.guest_error(self.name, f"{reg} written without the 0x5555 key: ignored")
            return
        if self.field("SR", busy):
            self.port.guest_error(self.name, f"{reg} written while SR.{busy}=1: ignored (RM0008 §19.4.4)")
            return
        self.set_field("SR", busy, 1)
        delay = UPDATE_LSI_CYCLES * NS_PER_S // self.lsi_hz
        self._updates[reg] = self.port.schedule(delay, lambda: self._update_done(reg, busy, new),
                                                f"{self.name}.{busy}")

    def _update_done(self, reg: str, busy: str, value: int) -> None:
        self._updates.pop(reg, None)
        if reg == "PR" and self.running:
            self._rebase()
        self.values[reg] = value
        self.set_field("SR", busy, 0)
        if reg == "PR" and self.running:
            self._arm()
