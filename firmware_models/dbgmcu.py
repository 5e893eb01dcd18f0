"""MCU debug component (DBGMCU) of the STM32F103, RM0008 §31.16, at 0xE004_2000.

IDCODE (§31.6.1) carries DEV_ID (0x410 medium density such as the STM32F103C8,
0x414 high density such as the STM32F103RC) and REV_ID.  The default REV_ID is
the last silicon revision listed for each: 0x2003 ("revision Y/1/2/X") for
0x410 and 0x1003 ("revision Y/1/2/X") for 0x414.

CR (§31.16.3) is reset only by a power-on reset, not by a system reset.

Errata (ES0340 for high density, ES0093 for medium density, "Debug registers
cannot be read by user software"): on real parts IDCODE and CR read as 0 unless
a debugger is connected.  ``user_reads_zero=True`` models that; the default
answers as with a debugger attached, which is what most emulator users expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_models.regs import Access, Peripheral, Register, bits, fields

if TYPE_CHECKING:
    from firmware_models.port import Port

DEFAULT_REV_ID = {0x410: 0x2003, 0x414: 0x1003}  # other DEV_IDs: pass rev_id


class DBGMCU(Peripheral):
    NAME = "DBGMCU"
    SIZE = 0x400

    REGISTERS = (
        Register("IDCODE", 0x00, 0, fields(("DEV_ID", 0, 12, Access.RO), ("REV_ID", 16, 16, Access.RO)),
                 on_read="_guarded_idcode"),
        Register("CR", 0x04, 0, (
            *bits(("DBG_SLEEP", 0), ("DBG_STOP", 1), ("DBG_STANDBY", 2), ("TRACE_IOEN", 5)),
            *fields(("TRACE_MODE", 6, 2)),
            *bits(
                ("DBG_IWDG_STOP", 8), ("DBG_WWDG_STOP", 9), ("DBG_TIM1_STOP", 10), ("DBG_TIM2_STOP", 11),
                ("DBG_TIM3_STOP", 12), ("DBG_TIM4_STOP", 13), ("DBG_CAN1_STOP", 14),
                ("DBG_I2C1_SMBUS_TIMEOUT", 15), ("DBG_I2C2_SMBUS_TIMEOUT", 16), ("DBG_TIM8_STOP", 17),
                ("DBG_TIM5_STOP", 18), ("DBG_TIM6_STOP", 19), ("DBG_TIM7_STOP", 20), ("DBG_CAN2_STOP", 21),
                ("DBG_TIM15_STOP", 22), ("DBG_TIM16_STOP", 23), ("DBG_TIM17_STOP", 24),
                ("DBG_TIM12_STOP", 25), ("DBG_TIM13_STOP", 26), ("DBG_TIM14_STOP", 27),
                ("DBG_TIM9_STOP", 28), ("DBG_TIM10_STOP", 29), ("DBG_TIM11_STOP", 30),
            ),
        ), on_read="_guarded_cr"),
    )

    def __init__(
        self,
        port: Port,
        *,
        name: str | None = None,
        dev_id: int = 0x414,
        rev_id: int | None = None,
        user_reads_zero: bool = False,
    ) -> None:
        self.dev_id = dev_id & 0xFFF
        self.rev_id = (DEFAULT_REV_ID.get(self.dev_id, 0x1000) if rev_id is None else rev_id) & 0xFFFF
        self.user_reads_zero = user_reads_zero
        super().__init__(port, name)

    @property
    def idcode(self) -> int:
        return self.rev_id << 16 | self.dev_id

    def reset(self) -> None:
        """System reset: CR is kept (RM0008 §31.16.3: reset by POR only)."""
        cr = self.values.get("CR", 0)
        super().reset()
        self.values["IDCODE"] = self.idcode
        self.values["CR"] = cr

    def power_on_reset(self) -> None:
        self.values = {}
        self.reset()

    def _guarded_idcode(self) -> int:
        return 0 if self.user_reads_zero else self.values["IDCODE"]

    def _guarded_cr(self) -> int:
        return 0 if self.user_reads_zero else self.values["CR"]
