"""Alternate-function I/O (AFIO) of the STM32F103, RM0008 §9.4.

Remaps, EXTI line sources and the SWJ (debug port) configuration.  The model
keeps the values and answers the questions the machine asks of them (which
port feeds EXTI line n, is SWD still enabled); the pin multiplexing itself is
not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_models.regs import Access, Field, Peripheral, Register, fields

if TYPE_CHECKING:
    from firmware_models.port import Port

# SWJ_CFG encodings, RM0008 §9.4.2.
SWJ_CFG_NAMES = {
    0b000: "full SWJ (JTAG-DP + SW-DP)",
    0b001: "full SWJ without NJTRST",
    0b010: "JTAG-DP disabled, SW-DP enabled",
    0b100: "JTAG-DP and SW-DP disabled",
}


def _exticr(first: int) -> tuple[Field, ...]:
    return tuple(Field(f"EXTI{first + i}", 4 * i, 4) for i in range(4))


class AFIO(Peripheral):
    NAME = "AFIO"
    SIZE = 0x400

    REGISTERS = (
        # §9.4.1
        Register("EVCR", 0x00, 0, fields(("PIN", 0, 4), ("PORT", 4, 3), ("EVOE", 7))),
        # §9.4.2.  SWJ_CFG is write-only ("when read, the value is undefined": we read 0).
        Register("MAPR", 0x04, 0, fields(
            ("SPI1_REMAP", 0), ("I2C1_REMAP", 1), ("USART1_REMAP", 2), ("USART2_REMAP", 3),
            ("USART3_REMAP", 4, 2), ("TIM1_REMAP", 6, 2), ("TIM2_REMAP", 8, 2), ("TIM3_REMAP", 10, 2),
            ("TIM4_REMAP", 12), ("CAN_REMAP", 13, 2), ("PD01_REMAP", 15), ("TIM5CH4_IREMAP", 16),
            ("ADC1_ETRGINJ_REMAP", 17), ("ADC1_ETRGREG_REMAP", 18), ("ADC2_ETRGINJ_REMAP", 19),
            ("ADC2_ETRGREG_REMAP", 20), ("SWJ_CFG", 24, 3, Access.WO),
        ), on_write="_mapr_written"),
        # §9.4.3–9.4.6: EXTIx[3:0] selects the port (0 = PA ... 6 = PG) feeding EXTI line x.
        Register("EXTICR1", 0x08, 0, _exticr(0)),
        Register("EXTICR2", 0x0C, 0, _exticr(4)),
        Register("EXTICR3", 0x10, 0, _exticr(8)),
        Register("EXTICR4", 0x14, 0, _exticr(12)),
        # §9.4.7 (XL-density remaps; the bits exist in the register map of every F103).
        Register("MAPR2", 0x1C, 0, fields(
            ("TIM9_REMAP", 5), ("TIM10_REMAP", 6), ("TIM11_REMAP", 7), ("TIM13_REMAP", 8),
            ("TIM14_REMAP", 9), ("FSMC_NADV", 10),
        )),
    )

    def __init__(self, port: Port, *, name: str | None = None) -> None:
        self.swj_cfg = 0
        super().__init__(port, name)

    def reset(self) -> None:
        super().reset()
        self.swj_cfg = 0

    @property
    def swd_enabled(self) -> bool:
        """Is the SW-DP still usable (SWJ_CFG is not 100)?"""
        return self.swj_cfg != 0b100

    def exti_port(self, line: int) -> int:
        """Port index (0 = GPIOA ...) selected for EXTI line ``line`` (0–15)."""
        return self.field(f"EXTICR{line // 4 + 1}", f"EXTI{line}")

    def _mapr_written(self, old: int, new: int, raw: int) -> None:
        # §9.4.2: "Other combinations: no effect".  ST's HAL relies on that: its remap macros
        # write SWJ_CFG=111 so that a read-modify-write of MAPR (where SWJ_CFG reads back as
        # 0) does not re-enable full SWJ.  So only the four defined values take effect.
        cfg = self.register("MAPR").field("SWJ_CFG").get(raw)
        if cfg in SWJ_CFG_NAMES and cfg != self.swj_cfg:
            self.swj_cfg = cfg
            self.port.event("swj_cfg", value=cfg, meaning=SWJ_CFG_NAMES[cfg])
