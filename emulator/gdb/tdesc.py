"""What the stub tells GDB about the target: registers and the memory map.

Registers follow GDB's ``org.gnu.gdb.arm.m-profile`` feature (r0-r12, sp,
lr, pc, xpsr) and ``org.gnu.gdb.arm.m-system`` (msp, psp), plus the special
registers of the ARMv7-M ARM B1.4.3 (primask, basepri, faultmask, control)
so that ``info registers`` shows the masking state the boot flow leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

CORE_REGS = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "xpsr"]
SYSTEM_REGS = ["msp", "psp", "primask", "basepri", "faultmask", "control"]
REGISTERS = CORE_REGS + SYSTEM_REGS
PC, XPSR = 15, 16


def target_xml() -> str:
    def reg(i: int, name: str) -> str:
        kind = {"sp": "data_ptr", "msp": "data_ptr", "psp": "data_ptr", "pc": "code_ptr", "lr": "int"}.get(name, "int")
        bits = 8 if name in ("primask", "basepri", "faultmask", "control") else 32
        return f'    <reg name="{name}" bitsize="{bits}" regnum="{i}" type="{kind}" group="general"/>\n'

    core = "".join(reg(i, n) for i, n in enumerate(CORE_REGS))
    system = "".join(reg(len(CORE_REGS) + i, n) for i, n in enumerate(SYSTEM_REGS))
    return ('<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n<target version="1.0">\n'
            "  <architecture>arm</architecture>\n"
            f'  <feature name="org.gnu.gdb.arm.m-profile">\n{core}  </feature>\n'
            f'  <feature name="org.gnu.gdb.arm.m-system">\n{system}  </feature>\n'
            "</target>\n")


@dataclass(frozen=True)
class Region:
    kind: str  # "flash", "ram" or "rom"
    start: int
    length: int
    blocksize: int = 0


def memory_map_xml(regions: list[Region]) -> str:
    rows = []
    for r in regions:
        if r.kind == "flash":
            rows.append(f'  <memory type="flash" start="0x{r.start:x}" length="0x{r.length:x}">\n'
                        f'    <property name="blocksize">0x{r.blocksize:x}</property>\n  </memory>\n')
        else:
            rows.append(f'  <memory type="{r.kind}" start="0x{r.start:x}" length="0x{r.length:x}"/>\n')
    return ('<?xml version="1.0"?>\n<!DOCTYPE memory-map PUBLIC "+//IDN gnu.org//DTD GDB Memory Map V1.0//EN" '
            '"http://sourceware.org/gdb/gdb-memory-map.dtd">\n<memory-map>\n' + "".join(rows) + "</memory-map>\n")
