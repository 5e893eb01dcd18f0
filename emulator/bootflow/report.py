"""The run summary: built once as data from the machine's events, then shown
as a rich panel on stderr or written as JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emulator.core.machine import Machine, StopReason
from emulator.core.session import Board
from firmware_models.nvic import exception_name
from firmware_models.scb import CFSR_BITS, HFSR_BITS, decode_bits
from hostside.console import console as stderr_console

NS_PER_MS = 1_000_000


def format_ns(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.6f} s"
    if ns >= NS_PER_MS:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1000:
        return f"{ns / 1e3:.3f} us"
    return f"{ns} ns"


def at(address: int, symbol: str | None) -> str:
    """``0x08008134 (Reset_Handler)``, or only ``0x08008134`` when no symbol names the address."""
    text = f"0x{address:08X}"
    if not symbol or re.fullmatch(r"0x[0-9a-fA-F]+", symbol):  # no symbol: the lookup gave a bare address
        return text
    return f"{text} ({symbol})"


def summary(board: Board, stop: StopReason, wall_s: float | None = None) -> dict[str, Any]:
    m: Machine = board.machine
    sym = m.symbol
    faults = [{
        "exception": exception_name(f.exception), "cause": f.cause, "pc": f.pc, "symbol": sym(f.pc),
        "address": f.address, "time_ns": f.time_ns, "escalated": f.escalated,
    } for f in m.faults]
    cfsr, hfsr = m.scb["CFSR"], m.scb["HFSR"]
    data: dict[str, Any] = {
        "chip": m.chip.name,
        "images": [{"path": str(i.path), "kind": i.kind, "start": i.start, "end": i.end,
                    "label": i.label} for i in board.layout.images],
        "reset": {"msp": m.reset_msp, "pc": m.reset_pc, "symbol": sym(m.reset_pc & ~1),
                  "from_image_table": board.started_from_image_table},
        "stop": {"reason": stop.kind, "detail": stop.detail, "pc": stop.pc, "symbol": sym(stop.pc),
                 "clean": stop.clean},
        "emulated_ns": m.now_ns,
        "instructions": m.instructions,
        "engine": m.engine.name,
        "cycles": m.scheduler.cycles,
        "sysclk_hz": m.port.clocks.sysclk,
        "resets": m.resets,
        "path": [{"time_ns": t, "function": name} for t, name in m.path],
        "exceptions_taken": {exception_name(e): n for e, n in sorted(m.exc.taken_counts.items())},
        "faults": faults,
        "fault_registers": {"CFSR": cfsr, "HFSR": hfsr, "BFAR": m.scb["BFAR"], "MMFAR": m.scb["MMFAR"],
                            "CFSR_bits": decode_bits(cfsr, CFSR_BITS), "HFSR_bits": decode_bits(hfsr, HFSR_BITS)},
        "vtor": m.nvic.vtor,
        "warnings": list(board.layout.warnings),
        "unmodelled": [{"peripheral": p, "offset": o, "count": n} for (p, o), n in m.port.unmodelled_seen.items()],
        "guest_errors": [{"peripheral": p, "message": msg} for p, msg in m.port.guest_errors],
        "events": [e.as_dict() for e in m.events[:500]],
        "uart": {str(n): bytes(v).decode("latin-1") for n, v in m.uart_output.items()},
    }
    if wall_s is not None:
        data["wall_s"] = round(wall_s, 4)
    return data


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)


def _stderr_console() -> Console:
    # A terminal gets rich's console; piped output (CI logs) plain unwrapped lines, no trailing spaces.
    return stderr_console()


def _table() -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(overflow="fold")
    return t


def render(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or _stderr_console()
    t = _table()
    reset = data["reset"]
    t.add_row("chip", data["chip"])
    start = f"MSP 0x{reset['msp']:08X}, PC {at(reset['pc'], reset['symbol'])}"
    if reset["from_image_table"] is not None:
        start += f"  (started from the image's own table at 0x{reset['from_image_table']:08X}, " \
                 "as a debugger would; VTOR left at its reset value)"
    t.add_row("reset", escape(start))
    if data["path"]:
        t.add_row("path", " → ".join(p["function"] for p in data["path"][:24])
                  + (" …" if len(data["path"]) > 24 else ""))
    if data["exceptions_taken"]:
        t.add_row("exceptions", ", ".join(f"{k}×{v}" for k, v in data["exceptions_taken"].items()))
    for f in data["faults"]:
        where = f"{f['exception']} ({f['cause']}{', escalated' if f['escalated'] else ''}) at " \
                f"{at(f['pc'], f['symbol'])}"
        if f["address"] is not None:
            where += f", address 0x{f['address']:08X}"
        t.add_row("fault", escape(where))
    regs = data["fault_registers"]
    if regs["CFSR"] or regs["HFSR"]:
        t.add_row("fault regs", escape(f"CFSR=0x{regs['CFSR']:08X} [{' '.join(regs['CFSR_bits'])}]  "
                                f"HFSR=0x{regs['HFSR']:08X} [{' '.join(regs['HFSR_bits'])}]  "
                                f"BFAR=0x{regs['BFAR']:08X}"))
    stop = data["stop"]
    style = "green" if stop["clean"] else "bold red"
    t.add_row("ended", f"[{style}]{stop['reason']}[/]: {escape(stop['detail'])}")
    t.add_row("time", f"{format_ns(data['emulated_ns'])} emulated, {data['instructions']:,} instructions, "
                      f"SYSCLK {data['sysclk_hz'] / 1e6:g} MHz, {data['engine']} engine"
              + (f", {data['wall_s']:.3f} s wall" if "wall_s" in data else ""))
    if data["resets"]:
        t.add_row("resets", str(data["resets"]))
    for w in data["warnings"]:
        t.add_row("image warning", f"[yellow]{escape(w)}[/]")
    for u in data["unmodelled"][:10]:
        t.add_row("unmodelled", f"{u['peripheral']}+0x{u['offset']:03X} ×{u['count']}")
    for g in data["guest_errors"][:10]:
        t.add_row("firmware error", escape(f"{g['peripheral']}: {g['message']}"))
    console.print(t)


def render_flash(data: dict[str, Any], console: Console | None = None) -> None:
    """The outcome of ``python -m emulator flash``."""
    console = console or _stderr_console()
    t = _table()
    iface = data.get("dfu_interface")
    if iface is not None:
        kind = {"dfuse": "DfuSe", "dfu": "plain DFU 1.1"}.get(data.get("protocol") or "", "DFU")
        t.add_row("device", escape(f"{kind}, interface {iface['interface']} alt {iface['alt']} "
                                   f"\"{iface['name']}\""))
    how = f"erase order {data['erase_order']}" if data.get("protocol") != "dfu" else "blocks from 0"
    t.add_row("download", f"{data['app_size']} bytes at 0x{data['app_address']:08X}, {how}: "
              + ("ok" if data["download_ok"] else "[bold red]failed[/]")
              + f" ({data['download_emulated_ms']:.1f} ms emulated)")
    if data["erase_busy_ms"]:
        busy = data["erase_busy_ms"]
        t.add_row("erases", f"{len(busy)} erase commands, device busy {sum(busy):.1f} ms in all, "
                            f"longest {max(busy):.1f} ms (dfu-util gives up after 5000 ms)")
    if data["error"]:
        t.add_row("error", f"[bold red]{escape(data['error'])}[/]")
    v = data["verify"]
    if v is not None:
        by = " (from the flash contents)" if data.get("verify_method") == "flash" else " (by upload)"
        t.add_row("verify", ("ok" + by) if v["ok"] else
                  f"[bold red]{v['differing_bytes']} of {v['compared']} bytes differ[/], first at "
                  f"0x{v['first_difference']:08X}{by}")
    c = data.get("flash_check")
    if c is not None:
        t.add_row("flash", flash_check_text(c))
    for note in data.get("notes") or []:
        t.add_row("note", escape(note))
    if data.get("left"):
        t.add_row("left DFU", escape(LEFT_TEXT.get(data["left"], data["left"])))
    j = data["jump"]
    t.add_row("jump", "[bold red]never reached the application's reset handler[/]" if j is None else
              escape(f"to {at(j['address'], j['symbol'])} with MSP 0x{j['msp']:08X} "
                     f"at {format_ns(j['time_ns'])}"))
    if data["stop"] is not None:
        t.add_row("ended", escape(f"{data['stop']['reason']}: {data['stop']['detail']}"))
    t.add_row("result", "[green]ok[/]" if data["ok"] else "[bold red]boot flow broken[/]")
    console.print(t)


LEFT_TEXT = {
    "leave-request": "DfuSe leave request (the bootloader resets or jumps)",
    "vanished": "the device reset itself after manifestation",
    "detached": "the device left the bus after manifestation (bitWillDetach)",
    "reset": "USB reset by the host",
    "none": "nothing sent: the board ran on by itself",
}


def flash_check_text(c: dict[str, Any]) -> str:
    """The flash model against the image sent, loudly when they differ."""
    if c["ok"]:
        return f"holds the {c['compared']} bytes sent" + (
            f" (landed at 0x{c['landed_at']:08X})" if c.get("landed_at") is not None else "")
    if c.get("problem"):
        return f"[bold red]{escape(c['problem'])}[/]"
    diffs = ", ".join(f"0x{d['address']:08X} sent {d['sent']:02X} holds "
                      + ("nothing" if d["flash"] is None else f"{d['flash']:02X}") for d in c["differences"])
    return (f"[bold red]differs from the image sent: {c['differing_bytes']} of {c['compared']} bytes, "
            f"first at 0x{c['first_difference']:08X}[/] ({diffs}"
            + (", …" if c["differing_bytes"] > len(c["differences"]) else "") + ")")


_HEX = re.compile(r"0x[0-9a-fA-F]{1,8}")


def evidence_text(value: Any) -> str:
    """A finding's evidence as a reader wants it: addresses as 0x08040000 (not Python's 0x8040000),
    lists comma-separated, nested ones and mappings in parentheses, no Python quotes or brackets."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f"0x{int(value, 16):08X}" if _HEX.fullmatch(value) else value
    if isinstance(value, dict):
        return ", ".join(f"{k}={_nested(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        sentences = any(isinstance(v, str) and " " in v for v in value)
        return ("; " if sentences else ", ").join(_nested(v) for v in value) or "none"
    return str(value)


def _nested(value: Any) -> str:
    text = evidence_text(value)
    return f"({text})" if isinstance(value, dict | list | tuple) and value else text


def render_check(data: dict[str, Any], console: Console | None = None) -> None:
    """``python -m emulator check``: one block per finding, evidence indented."""
    console = console or _stderr_console()
    t = _table()
    dev = data.get("device")
    if dev is not None:
        kind = {"dfuse": "DfuSe", "dfu": "plain DFU 1.1"}.get(dev["protocol"], dev["protocol"])
        f = dev["functional"] or {}
        caps = ", ".join(k for k, on in (("download", f.get("can_download")), ("upload", f.get("can_upload")),
                                         ("manifestation tolerant", f.get("manifestation_tolerant")),
                                         ("will detach", f.get("will_detach"))) if on)
        t.add_row("device", escape(f"{kind} {f.get('dfu_version', '')}, interface {dev['interface']} alt "
                                   f"{dev['alt']} \"{dev['name']}\" ({caps}; wTransferSize "
                                   f"{f.get('transfer_size')})"))
    for order, run in data["runs"].items():
        verify = run["verify"]
        by = " from the flash" if run.get("verify_method") == "flash" else ""
        verdict = f"verify{by} ok" if verify and verify["ok"] else (
            f"verify{by} FAILED at {verify['first_difference']:#010x}" if verify else (run["error"] or "no verify"))
        flash = run.get("flash_check")
        if flash is not None and not flash["ok"]:
            verdict += ", flash differs from the image"
        jump = run.get("jump")
        jumped = (f"jumped to {at(jump['address'], jump['symbol'])} at {format_ns(jump['time_ns'])}"
                  if jump else f"jumped={run['jumped']}")
        t.add_row(f"run {order}", escape(f"download {'ok' if run['download_ok'] else 'failed'}, {verdict}, "
                                         f"{jumped}, ended {run['stop']}"))
    for note in data.get("notes") or []:
        t.add_row("note", escape(note))
    console.print(t)
    if not data["findings"]:
        console.print("[green]no findings: the boot flow is sound[/]")
        return
    for f in data["findings"]:
        console.print(f"[bold red]{f['id']}[/]: {escape(f['title'])}")
        for key, value in f["evidence"].items():
            console.print(f"    {key}: {escape(evidence_text(value))}")
        if f["reference"]:
            console.print(f"    [dim]see {escape(f['reference'])}[/]")
    console.print(f"[bold red]{len(data['findings'])} finding(s)[/]")


# -- --quiet: only what failed ----------------------------------------------------------------

def render_flash_result(data: dict[str, Any], console: Console | None = None) -> None:
    """``flash --quiet``: nothing when the boot flow worked, else one line saying where it broke."""
    if data["ok"]:
        return
    console = console or _stderr_console()
    if data["error"]:
        why = data["error"]
    elif data["verify"] is not None and not data["verify"]["ok"]:
        why = "verify failed"
    elif data.get("flash_check") is not None and not data["flash_check"]["ok"]:
        why = "the flash differs from the image sent"
    elif data["jump"] is None:
        why = "no jump into the application"
    else:
        why = f"the application ended in {data['stop']['reason'] if data['stop'] else 'nothing'}"
    console.print(f"boot flow broken: {escape(why)}", highlight=False)


def render_findings(data: dict[str, Any], console: Console | None = None) -> None:
    """``check --quiet``: one line per finding (id and title), nothing when there is none."""
    console = console or _stderr_console()
    for f in data["findings"]:
        console.print(f"{f['id']}: {escape(f['title'])}", highlight=False)


def render_sweep_counts(counts: dict[str, int], problems: list[str], console: Console | None = None) -> None:
    """``--power-cut-sweep --quiet``: the outcome counts, and each problem, when a cut went wrong."""
    if not counts.get("broken_app") and not counts.get("bricked") and not problems:
        return
    console = console or _stderr_console()
    console.print(", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
    for p in problems:
        console.print(f"problem: {escape(p)}", highlight=False)
