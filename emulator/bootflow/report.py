"""The run summary: built once as data from the machine's events, then shown
as a rich panel on stderr or written as JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emulator.core.machine import Machine, StopReason
from emulator.core.session import Board
from firmware_models.nvic import exception_name
from firmware_models.scb import CFSR_BITS, HFSR_BITS, decode_bits

NS_PER_MS = 1_000_000


def format_ns(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.6f} s"
    if ns >= NS_PER_MS:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1000:
        return f"{ns / 1e3:.3f} us"
    return f"{ns} ns"


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
    console = Console(stderr=True, highlight=False)
    # Piped output (CI logs) gets wide lines instead of rich's 80-column default.
    return console if console.is_terminal else Console(stderr=True, highlight=False, width=160)


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
    start = f"MSP 0x{reset['msp']:08X}, PC 0x{reset['pc']:08X} ({reset['symbol']})"
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
                f"0x{f['pc']:08X} {f['symbol']}"
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
    t.add_row("download", f"{data['app_size']} bytes at 0x{data['app_address']:08X}, erase order "
                          f"{data['erase_order']}: " + ("ok" if data["download_ok"] else "[bold red]failed[/]")
              + f" ({data['download_emulated_ms']:.1f} ms emulated)")
    if data["erase_busy_ms"]:
        busy = data["erase_busy_ms"]
        t.add_row("erases", f"{len(busy)} erase commands, device busy {sum(busy):.1f} ms in all, "
                            f"longest {max(busy):.1f} ms (dfu-util gives up after 5000 ms)")
    if data["error"]:
        t.add_row("error", f"[bold red]{escape(data['error'])}[/]")
    v = data["verify"]
    if v is not None:
        t.add_row("verify", "ok" if v["ok"] else
                  f"[bold red]{v['differing_bytes']} of {v['compared']} bytes differ[/], first at "
                  f"0x{v['first_difference']:08X}")
    j = data["jump"]
    t.add_row("jump", "[bold red]never reached the application's reset handler[/]" if j is None else
              escape(f"to 0x{j['address']:08X} ({j['symbol']}) with MSP 0x{j['msp']:08X} "
                     f"at {format_ns(j['time_ns'])}"))
    if data["stop"] is not None:
        t.add_row("ended", escape(f"{data['stop']['reason']}: {data['stop']['detail']}"))
    t.add_row("result", "[green]ok[/]" if data["ok"] else "[bold red]boot flow broken[/]")
    console.print(t)


def render_check(data: dict[str, Any], console: Console | None = None) -> None:
    """``python -m emulator check``: one block per finding, evidence indented."""
    console = console or _stderr_console()
    t = _table()
    for order, run in data["runs"].items():
        verify = run["verify"]
        verdict = "verify ok" if verify and verify["ok"] else (
            f"verify FAILED at {verify['first_difference']:#010x}" if verify else (run["error"] or "no verify"))
        t.add_row(f"run {order}", escape(f"download {'ok' if run['download_ok'] else 'failed'}, {verdict}, "
                                         f"jumped={run['jumped']}, ended {run['stop']}"))
    console.print(t)
    if not data["findings"]:
        console.print("[green]no findings: the boot flow is sound[/]")
        return
    for f in data["findings"]:
        console.print(f"[bold red]{f['id']}[/]: {escape(f['title'])}")
        for key, value in f["evidence"].items():
            console.print(f"    {key}: {escape(str(value))}")
        if f["reference"]:
            console.print(f"    [dim]see {escape(f['reference'])}[/]")
    console.print(f"[bold red]{len(data['findings'])} finding(s)[/]")
