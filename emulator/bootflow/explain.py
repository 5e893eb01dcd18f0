"""``--explain``: the boot flow told step by step for someone learning it.

Built only from the machine's recorded events (docs/ARCHITECTURE.md), named with ELF
symbols, each step citing the manual section that says why it happens.
"""

from __future__ import annotations

from collections.abc import Callable

from emulator.bootflow.report import format_ns
from emulator.bootflow.scenario import FlashOutcome
from emulator.core.port import Event


def _pin_name(e: Event) -> str:
    pin = f"P{e.data['port'][-1]}{e.data['pin']}"
    label = e.data.get("label")
    return pin if not label or label == pin else f"{label} ({pin})"


STEPS: dict[str, tuple[str, Callable[[Event], str]]] = {
    "reset": ("ARMv7-M B1.5.5, RM0008 §7.1", lambda e: "NRST pin reset (the reset button)" if e.data["cause"] == "pin"
                                                    else f"{e.data['cause'].replace('_', '-')} reset"),
    "reset_vector": ("ARMv7-M B1.5.5", lambda e: f"the core loads MSP=0x{e.data['msp']:08X} and "
                                                   f"PC=0x{e.data['reset_pc']:08X} from the {e.data['source']}"),
    "swj_cfg": ("RM0008 §9.4.2", lambda e: f"AFIO_MAPR.SWJ_CFG: {e.data['meaning']}"),
    "clock_switch": ("RM0008 §7.2, §7.3.2", lambda e: f"SYSCLK switched from {e.data['previous']} to "
                                                        f"{e.data['source']}: {e.data['sysclk'] / 1e6:g} MHz"),
    "gpio_read": ("RM0008 §9.2.3, §3.4", lambda e: f"reads {_pin_name(e)} = "
                                                     f"{'high' if e.data['level'] else 'low'}"),
    "usb_state": ("RM0008 §23.4.2, USB 2.0 §9.1", lambda e: "USB: " + {
        "attached": "the device connects (transceiver powered, D+ pulled up)",
        "detached": "the device disconnects",
        "bus_reset": "the host resets the bus",
        "address": f"address {e.data.get('address')} set",
    }.get(e.data["state"], e.data["state"])),
    "flash_unlock": ("RM0008 §3.3.3, PM0075 §2.3.1", lambda e: "flash controller unlocked (KEYR key sequence)"),
    "flash_lock": ("PM0075 §2.3.1", lambda e: "flash controller locked again"),
    "flash_page_erase": ("PM0075 §2.3.4", lambda e: f"page erase at 0x{e.data['address']:08X}"),
    "flash_out_of_range_erase": ("RM0008 §3.3.3", lambda e: f"page erase requested at 0x{e.data['address']:08X}, "
                                                             "past the end of flash"),
    "flash_mass_erase": ("PM0075 §2.3.5", lambda e: "mass erase"),
    "reset_request": ("ARMv7-M B3.2.6", lambda e: "the firmware requests a system reset (AIRCR.SYSRESETREQ)"),
    "vtor_write": ("ARMv7-M B3.2.5", lambda e: f"VTOR set to 0x{e.data['value']:08X}"),
    "jump": ("ARMv7-M B1.4.2", lambda e: f"jump into the application at 0x{e.data['address']:08X} "
                                          f"with MSP=0x{e.data['msp']:08X}"),
    "first_interrupt_after_jump": ("ARMv7-M B1.5.2", lambda e: f"first interrupt after the jump: "
                                                                f"{e.data['exception']}, handler fetched through "
                                                                f"VTOR=0x{e.data['vtor']:08X}"),
    "fault": ("ARMv7-M B1.5.8, B3.2.15", lambda e: f"{e.data['exception']} ({e.data['cause']})"),
    "lockup": ("ARMv7-M B1.5.15", lambda e: f"LOCKUP: {e.data['reason']}"),
    "erased_vector": ("ARMv7-M B1.5.2", lambda e: f"vector for {e.data['exception']} at "
                                                   f"0x{e.data['vector_address']:08X} is erased flash"),
}


def narrate(outcome: FlashOutcome) -> list[str]:
    m = outcome.board.machine
    lines: list[str] = []
    events = [e for e in m.events if e.kind in STEPS or e.kind.startswith("flash_")]
    i = 0
    while i < len(events):
        e = events[i]
        # A run of the same flash operation from the same code is one step of the story.
        j = i
        while (e.kind.startswith("flash_") and j + 1 < len(events) and events[j + 1].kind == e.kind
               and events[j + 1].pc == e.pc):
            j += 1
        where = f"  [{m.symbol(e.pc)}]" if e.pc else ""
        if j > i:
            first, last = e.data.get("address"), events[j].data.get("address")
            span = f" from 0x{first:08X} to 0x{last:08X}" if first is not None and last is not None else ""
            lines.append(f"{format_ns(e.time_ns):>14}  {j - i + 1} x {e.kind.removeprefix('flash_')}{span}, "
                         f"until {format_ns(events[j].time_ns)}{where}  (PM0075 §2.3)")
        elif e.kind in STEPS:
            reference, text = STEPS[e.kind]
            lines.append(f"{format_ns(e.time_ns):>14}  {text(e)}{where}  ({reference})")
        i = j + 1
    journal = m.flash.journal.as_dicts()
    programs = sum(1 for e in journal if e["kind"] == "program")
    beyond = [e for e in journal if e["kind"] == "out_of_range_erase"]
    if programs:
        lines.append(f"{'':>14}  flash journal: {programs} half-words programmed (PM0075 §2.3.3)")
    if beyond:
        lines.append(f"{'':>14}  flash journal: {len(beyond)} page erases asked for addresses past the end of "
                     f"flash, 0x{beyond[0]['address']:08X} to 0x{beyond[-1]['address']:08X} (RM0008 §3.3.3)")
    if outcome.erase_busy_ms:
        lines.append(f"{'':>14}  DFU: {len(outcome.erase_busy_ms)} ERASE commands kept the device busy "
                     f"{sum(outcome.erase_busy_ms):.1f} ms in all (UM0424 §4.3)")
    return lines
