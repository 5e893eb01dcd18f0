"""The flash model against what a host sent: no silent false success after a download.

Whatever a DFU exchange or a host tool reports, the bytes that count are the
ones in the flash array.  :func:`compare_flash` compares them with the image
that was sent and names the differing addresses; :func:`landing_address` finds
where a plain DFU bootloader (whose downloads carry no address, DFU 1.1 §6.1.1)
put a download, from the flash journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from emulator.core.machine import Machine
from firmware_models import flash_journal as fj

MAX_LISTED_DIFFERENCES = 8


def compare_flash(flash: bytes, flash_base: int, segments: Iterable[tuple[int, bytes]]) -> dict[str, Any]:
    """Every byte of ``segments`` ((address, data) pairs) against ``flash`` (the whole array from
    ``flash_base``): ``ok``, ``compared``, and when they differ ``first_difference``,
    ``differing_bytes`` and the first few ``differences`` (address, sent, flash; flash None past
    the end of the array)."""
    differing, compared = 0, 0
    first: int | None = None
    listed: list[dict[str, Any]] = []
    for address, data in segments:
        off = address - flash_base
        for i, want in enumerate(data):
            at = off + i
            have = flash[at] if 0 <= at < len(flash) else None
            compared += 1
            if have != want:
                differing += 1
                if first is None:
                    first = address + i
                if len(listed) < MAX_LISTED_DIFFERENCES:
                    listed.append({"address": address + i, "sent": want, "flash": have})
    result: dict[str, Any] = {"ok": differing == 0, "compared": compared}
    if differing:
        result.update(first_difference=first, differing_bytes=differing, differences=listed)
    return result


def landing_address(m: Machine, since_ns: int, until_ns: int) -> int | None:
    """The start of the lowest main-flash page the firmware erased or programmed in [since, until]
    (page-aligned, so held-back first words or an already blank page do not move it)."""
    base, end = m.chip.flash_base, m.chip.flash_base + m.chip.flash_size
    lowest = None
    for e in m.flash.journal.entries:
        if e.kind not in (fj.PROGRAM, fj.PAGE_ERASE) or e.address is None or not since_ns <= e.time_ns <= until_ns:
            continue
        if base <= e.address < end:
            lowest = e.address if lowest is None else min(lowest, e.address)
    if lowest is None:
        return None
    return base + (lowest - base) // m.chip.page_size * m.chip.page_size


def describe_differences(result: dict[str, Any]) -> str:
    """One line naming the differing bytes of a :func:`compare_flash` result."""
    items = ", ".join(f"0x{d['address']:08X} sent {d['sent']:02X} holds "
                      + ("nothing" if d["flash"] is None else f"{d['flash']:02X}") for d in result["differences"])
    more = ", ..." if result["differing_bytes"] > len(result["differences"]) else ""
    return (f"{result['differing_bytes']} of {result['compared']} bytes differ, first at "
            f"0x{result['first_difference']:08X} ({items}{more})")
