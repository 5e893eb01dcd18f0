"""``--report FILE.html``: one self-contained HTML page showing the boot flow.

Draws what :mod:`emulator.bootflow.report_data` computed: inline SVG and CSS,
a little inline JavaScript for zooming the timelines, nothing fetched from
anywhere (no fonts, scripts or images), so the file opens in any browser and
survives being attached to a CI job.  Without JavaScript the page shows the
whole run unzoomed; every mark carries an SVG ``<title>`` tooltip and every
timeline item is also a row of the event table.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from emulator.bootflow.report import at, format_ns
from emulator.bootflow.report_data import (
    PAGE_STATE_TITLES,
    PAGE_STATES,
    PAGES_PER_ROW,
    FlashMap,
    JumpCard,
    ReportDoc,
    SweepView,
    Timeline,
)
from emulator.core.machine import EmulatorError

# -- geometry (px) ---------------------------------------------------------------------------------
TL_WIDTH = 1320
TL_LABEL = 180
TL_RIGHT = 12
TL_AXIS = 22
TL_PHASE = 24
TL_LANE = 26
TL_MARK = 44  # room above the axis for marker labels (three rows)
CHAR_PX = 6.6  # rough width of a character of the 11 px labels, to hide those that do not fit

CELL = 15
GAP = 2
MAP_LABEL = 84
BAND = 13

SWEEP_CELL = 14
SWEEP_COLUMNS = 48


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# -- time axis ---------------------------------------------------------------------------------------

def nice_step(span_ns: float, target_ticks: int = 10) -> int:
    """A 1/2/5 × 10^k step giving about ``target_ticks`` ticks over ``span_ns`` (same rule as the JS)."""
    raw = max(span_ns / max(target_ticks, 1), 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return int(m * power)
    return int(10 * power)


def tick_label(ns: int, step: int) -> str:
    """A tick's time in the unit its step needs: seconds past 1 s while the step is whole milliseconds."""
    if step >= 1_000_000_000 or ns >= 1_000_000_000 and step >= 1_000_000:
        decimals = max(0, math.ceil(-math.log10(step / 1e9) - 1e-9))
        return f"{ns / 1e9:.{decimals}f} s"
    if step >= 1_000_000:
        return f"{ns / 1e6:g} ms"
    if step >= 1_000:
        return f"{ns / 1e3:g} µs"
    return f"{ns} ns"


# -- pieces ------------------------------------------------------------------------------------------

def _header(doc: ReportDoc) -> str:
    h = doc.header
    rows = [("command", h.command), ("chip", h.chip)]
    out = ['<header class="top"><div class="titlebar">',
           f'<h1>stm32-bootsim · {_e(doc.title)}</h1>',
           f'<span class="verdict v-{_e(doc.verdict_tone)}" id="verdict">{_e(doc.verdict)}</span></div>',
           '<table class="kv header-table"><tbody>']
    for k, v in rows:
        out.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
    for img in h.images:
        size = "missing" if img.size is None else f"{img.size:,} bytes"
        digest = f'<code title="{_e(img.sha256)}">sha256 {_e(img.sha256[:16])}…</code>' if img.sha256 else ""
        out.append(f"<tr><th>{_e(img.role)}</th><td><b>{_e(img.name)}</b> <span class=dim>{_e(img.path)}</span>, "
                   f"{_e(size)} {digest}</td></tr>")
    if h.options:
        opts = " ".join(f"<code>--{_e(k)} {_e(v)}</code>" if v != "True" else f"<code>--{_e(k)}</code>"
                        for k, v in h.options.items())
        out.append(f"<tr><th>options</th><td>{opts}</td></tr>")
    wall = "" if h.wall_s is None else f", {h.wall_s:.2f} s wall"
    out.append(f"<tr><th>time</th><td>{_e(format_ns(h.emulated_ns))} emulated{_e(wall)}</td></tr>")
    out.append(f"<tr><th>tool</th><td>{_e(h.tool_version)}</td></tr>")
    if doc.findings:
        chips = " ".join(f'<a class="chip" href="#finding-{i}">{_e(f.id)}</a>' for i, f in enumerate(doc.findings))
        out.append(f"<tr><th>findings</th><td>{chips}</td></tr>")
    out.append("</tbody></table></header>")
    return "\n".join(out)


def _nav(doc: ReportDoc) -> str:
    links = []
    if doc.sweep is not None:
        links.append(("sweep", "Power-cut sweep"))
    if any(r.flash for r in doc.runs):
        links.append(("flash-map", "Flash map"))
    if doc.runs:
        links.append(("timeline", "Timeline"))
    if doc.findings:
        links.append(("findings", "Findings"))
    if any(r.jump for r in doc.runs):
        links.append(("jump", "Jump"))
    if doc.runs:
        links += [("uart", "USART output"), ("events", "Event tables")]
    return '<nav class="toc">' + " · ".join(f'<a href="#{k}">{_e(t)}</a>' for k, t in links) + "</nav>"


def _legend_swatch(state: str, title: str, count: int | None = None) -> str:
    n = "" if count is None else f" <b>{count}</b>"
    return f'<span class="legend-item"><svg width="14" height="14"><rect class="cell s-{state}" x="1" y="1" ' \
           f'width="12" height="12"/></svg>{_e(title)}{n}</span>'


def flash_map_svg(fm: FlashMap, key: str) -> str:
    """One cell per page, rows of :data:`PAGES_PER_ROW` pages, the DfuSe layout's units above each row."""
    row_bytes = PAGES_PER_ROW * fm.page_size
    rows = fm.rows
    row_h = BAND + CELL + 8
    extra = 26 if any(p.beyond_end for p in fm.pages) else 0
    width = MAP_LABEL + PAGES_PER_ROW * (CELL + GAP) + 4
    height = rows * row_h + extra + 4
    out = [f'<svg class="flashmap" id="flashmap-{_e(key)}" data-pages="{len(fm.pages)}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="flash map: one cell per page">']
    real_rows = -(-(fm.flash_size // fm.page_size) // PAGES_PER_ROW)

    def row_y(r: int) -> int:
        return r * row_h + (extra if r >= real_rows else 0)

    for r in range(rows):
        y = row_y(r)
        base = fm.flash_base + r * row_bytes
        out.append(f'<text class="addr" x="{MAP_LABEL - 6}" y="{y + BAND + CELL - 4}" text-anchor="end">'
                   f"0x{base:08X}</text>")
        # The layout string's units overlapping this row, at the page scale.
        for band in fm.layout:
            s, t = max(band.start, base), min(band.end, base + row_bytes)
            if s >= t:
                continue
            x = MAP_LABEL + (s - base) / fm.page_size * (CELL + GAP)
            w = max((t - s) / fm.page_size * (CELL + GAP) - GAP, 1)
            cls = "band" + (" band-beyond" if band.beyond_end else "") + (" band-odd" if band.not_page_multiple else "")
            tip = (f"DfuSe layout unit 0x{band.start:08X}–0x{band.end - 1:08X} ({band.text})"
                   + ("; past the chip's end" if band.beyond_end else "")
                   + ("; not a whole number of pages" if band.not_page_multiple else ""))
            out.append(f'<rect class="{cls}" x="{x:.1f}" y="{y + 1}" width="{w:.1f}" height="{BAND - 3}">'
                       f"<title>{_e(tip)}</title></rect>")
            if band.start >= base and w > 34:
                out.append(f'<text class="band-text" x="{x + 3:.1f}" y="{y + BAND - 4}">{_e(band.text)}</text>')
    for p in fm.pages:
        r, c = divmod(p.index, PAGES_PER_ROW)
        x = MAP_LABEL + c * (CELL + GAP)
        y = row_y(r) + BAND
        cls = f"cell page s-{p.state}" + (" beyond" if p.beyond_end else "") + (" app" if p.in_application else "")
        cls += " boot-touched" if p.in_bootloader and p.state != "bootloader" else ""
        out.append(f'<rect class="{cls}" data-state="{p.state}" data-address="0x{p.address:08X}" x="{x}" y="{y}" '
                   f'width="{CELL}" height="{CELL}"><title>{_e(p.describe())}</title></rect>')
    if extra:
        y = real_rows * row_h
        out.append(f'<text class="chip-end-text" x="{MAP_LABEL}" y="{y + 11}">end of the chip\'s '
                   f"{fm.flash_size // 1024} KiB flash at 0x{fm.flash_end:08X}: the cells below do not exist</text>")
        out.append(f'<line class="chip-end" x1="4" x2="{width - 4}" y1="{y + 17}" y2="{y + 17}"/>')
    out.append("</svg>")
    return "".join(out)


def _flash_section(doc: ReportDoc) -> str:
    maps = [r for r in doc.runs if r.flash is not None]
    if not maps:
        return ""
    counts = dict.fromkeys(PAGE_STATES, 0)
    for r in maps:
        assert r.flash is not None
        for k, v in r.flash.counts().items():
            counts[k] = max(counts[k], v)
    legend = "".join(_legend_swatch(s, PAGE_STATE_TITLES[s]) for s in PAGE_STATES)
    out = ['<section id="flash-map"><h2>Flash map</h2>',
           '<p class="explain">Every page of the chip\'s flash is a cell, coloured by what the run did to it; '
           "the bar above each row is the DfuSe layout string the bootloader presents (the units a host erases "
           "at), drawn at the same address scale. Hover a cell for its history.</p>",
           f'<div class="legend">{legend}<span class="legend-item"><svg width="30" height="14"><rect class="band" '
           'x="1" y="3" width="28" height="9"/></svg>DfuSe layout unit</span></div><div class="maps">']
    for r in maps:
        fm = r.flash
        assert fm is not None
        c = fm.counts()
        notes = [f"{c[s]} {PAGE_STATE_TITLES[s]}" for s in PAGE_STATES if c[s] and s != "untouched"]
        layout = (f'<div class="layout-string">layout <code>{_e(fm.layout_string)}</code></div>'
                  if fm.layout_string else "")
        if fm.layout_error:
            layout += f'<div class="bad">layout string unparsable: {_e(fm.layout_error)}</div>'
        out.append(f'<figure class="map-figure" style="width:{MAP_LABEL + PAGES_PER_ROW * (CELL + GAP) + 4}px">'
                   f'<figcaption><b>{_e(r.title)}</b>: {_e(", ".join(notes))}'
                   f"</figcaption>{layout}{flash_map_svg(fm, r.key)}</figure>")
    out.append("</div></section>")
    return "\n".join(out)


def timeline_svg(tl: Timeline, key: str) -> str:
    """Lanes in emulated time; items carry their times in data-s/data-e so the script can re-place them."""
    x0, x1 = TL_LABEL, TL_WIDTH - TL_RIGHT
    end = max(tl.end_ns, 1)
    lanes = tl.lanes
    top = TL_MARK + TL_AXIS + TL_PHASE
    height = top + len(lanes) * TL_LANE + 6

    def x(t: int) -> float:
        return x0 + t / end * (x1 - x0)

    out = [f'<svg class="timeline" id="timeline-{_e(key)}" data-end="{end}" data-x0="{x0}" data-x1="{x1}" '
           f'width="{TL_WIDTH}" height="{height}" viewBox="0 0 {TL_WIDTH} {height}" role="img" '
           f'aria-label="timeline in emulated time">',
           f'<defs><clipPath id="clip-{_e(key)}"><rect x="{x0}" y="0" width="{x1 - x0}" height="{height}"/>'
           "</clipPath></defs>"]
    for n, (lane_id, title) in enumerate(lanes):
        y = top + n * TL_LANE
        out.append(f'<g class="lane" data-lane="{_e(lane_id)}"><rect class="lane-bg{" odd" if n % 2 else ""}" '
                   f'x="0" y="{y}" width="{TL_WIDTH}" height="{TL_LANE}"/>'
                   f'<text class="lane-title" x="8" y="{y + TL_LANE / 2 + 4}">{_e(title)}</text></g>')
    out.append(f'<text class="lane-title" x="8" y="{TL_MARK + TL_AXIS + TL_PHASE / 2 + 4}">boot phases</text>')
    out.append(f'<g clip-path="url(#clip-{_e(key)})">')
    # The axis: ticks drawn here for the whole run, redrawn by the script on zoom.
    step = nice_step(end)
    out.append('<g class="axis">')
    for t in range(0, end + 1, step):
        out.append(f'<line class="tick" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TL_MARK + TL_AXIS - 6}" '
                   f'y2="{height}"/><text class="tick-label" x="{x(t) + 3:.1f}" y="{TL_MARK + TL_AXIS - 8}">'
                   f"{_e(tick_label(t, step))}</text>")
    out.append("</g>")
    for n, ph in enumerate(tl.phases):
        y = TL_MARK + TL_AXIS
        fits = x(ph.end_ns) - x(ph.start_ns) >= CHAR_PX * len(ph.name) + 8
        hide = "" if fits else ' style="display:none"'
        out.append(f'<g class="phase" data-name="{_e(ph.name)}"><rect class="phase-bg p{n % 2}" data-s="{ph.start_ns}" '
                   f'data-e="{ph.end_ns}" data-min="1" x="{x(ph.start_ns):.2f}" y="{y + 2}" '
                   f'width="{max(x(ph.end_ns) - x(ph.start_ns), 1):.2f}" height="{TL_PHASE - 4}">'
                   f"<title>{_e(ph.name)}: {_e(format_ns(ph.start_ns))} – {_e(format_ns(ph.end_ns))} "
                   f"({_e(format_ns(ph.end_ns - ph.start_ns))}); click to zoom</title></rect>"
                   f'<text class="phase-text" data-s="{ph.start_ns}" data-e="{ph.end_ns}" x="{x(ph.start_ns) + 4:.2f}" '
                   f'y="{y + TL_PHASE / 2 + 4}"{hide}>{_e(ph.name)}</text></g>')
    lane_index = {lane_id: n for n, (lane_id, _) in enumerate(lanes)}
    for n, item in enumerate(tl.items):
        y = top + lane_index.get(item.lane, 0) * TL_LANE + 4
        xs, xe = x(item.start_ns), x(item.end_ns)
        w = max(xe - xs, 2.0)
        tip = _item_tip(item)
        out.append(f'<rect class="ev t-{item.tone}" data-i="{n}" data-s="{item.start_ns}" data-e="{item.end_ns}" '
                   f'data-min="2" x="{xs:.2f}" y="{y}" width="{w:.2f}" height="{TL_LANE - 8}"><title>{_e(tip)}'
                   "</title></rect>")
    for n, mk in enumerate(tl.markers):
        xm = x(mk.time_ns)
        # Labels take turns on three rows and hang left of their line near the right edge.
        right = xm > x1 - CHAR_PX * len(mk.label) - 6
        tx, anchor = (xm - 3, "end") if right else (xm + 3, "start")
        out.append(f'<g class="marker m-{mk.tone}"><line data-s="{mk.time_ns}" x1="{xm:.2f}" '
                   f'x2="{xm:.2f}" y1="{TL_MARK - 28 + 14 * (n % 3)}" y2="{height}"/>'
                   f'<text class="marker-text" data-s="{mk.time_ns}" x="{tx:.2f}" text-anchor="{anchor}" '
                   f'y="{TL_MARK - 32 + 14 * (n % 3)}">'
                   f"{_e(mk.label)}</text><title>{_e(mk.label)} at {_e(format_ns(mk.time_ns))}</title></g>")
    out.append("</g></svg>")
    return "".join(out)


def _item_tip(item: Any) -> str:
    when = format_ns(item.start_ns)
    if item.end_ns > item.start_ns:
        when += f" – {format_ns(item.end_ns)} ({format_ns(item.end_ns - item.start_ns)})"
    lines = [f"{when}: {item.label}"]
    if item.detail:
        lines.append(item.detail)
    if item.pc:
        named = at(item.pc, item.symbol) != f"0x{item.pc:08X}"  # a symbol, not the address again
        lines.append(f"PC 0x{item.pc:08X}" + (f" {item.symbol}" if named else ""))
    if item.reference:
        lines.append(f"see {item.reference}")
    return "\n".join(lines)


def _timeline_section(doc: ReportDoc) -> str:
    if not doc.runs:
        return ""
    out = ['<section id="timeline"><h2>Timeline</h2>',
           '<p class="explain">Emulated time left to right. Scroll the mouse wheel over a timeline to zoom, drag '
           "to pan, click a boot phase to zoom to it, double-click to see the whole run again. Hover a mark for "
           "its time, PC, symbol and manual reference; every mark is also a row of the event table below. "
           "A link ending in <code>#t=5.8-6.1</code> opens the timelines on that window (seconds).</p>",
           '<div class="legend">'
           + "".join(f'<span class="legend-item"><svg width="14" height="14"><rect class="ev t-{t}" x="1" y="1" '
                     f'width="12" height="12"/></svg>{_e(title)}</span>'
                     for t, title in (("ok", "program / attached / ok"), ("info", "erase / reset"),
                                      ("busy", "DFU busy"), ("destroy", "erase that wiped data programmed earlier"),
                                      ("beyond", "erase past the end of flash"), ("warn", "slow / warning"),
                                      ("bad", "fault / error / past a host's timeout"), ("jump", "jump, first IRQ"),
                                      ("n", "other")))
           + "</div>"]
    for r in doc.runs:
        out.append(f'<figure class="tl-figure"><figcaption><b>{_e(r.title)}</b> — '
                   f"{_e(format_ns(r.timeline.end_ns))} emulated "
                   f'<span class="zoom-controls" data-for="timeline-{_e(r.key)}">'
                   '<button type="button" data-zoom="in">zoom in</button>'
                   '<button type="button" data-zoom="out">zoom out</button>'
                   '<button type="button" data-zoom="all">whole run</button>'
                   '<span class="zoom-window"></span></span></figcaption>'
                   f'<div class="scroll">{timeline_svg(r.timeline, r.key)}</div></figure>')
    out.append("</section>")
    return "\n".join(out)


def _value_html(value: Any) -> str:
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return ", ".join(_e("–".join(str(x) for x in v)) for v in value)
        if all(isinstance(v, str) for v in value):
            return "<ul>" + "".join(f"<li>{_e(v)}</li>" for v in value) + "</ul>" if len(value) > 1 else \
                _e(value[0] if value else "none")
        return _e(json.dumps(value))
    if isinstance(value, dict):
        return "<dl class=nested>" + "".join(f"<dt>{_e(k)}</dt><dd>{_value_html(v)}</dd>"
                                             for k, v in value.items()) + "</dl>"
    return _e(value)


def _findings_section(doc: ReportDoc) -> str:
    if not doc.findings and doc.title != "check":
        return ""
    out = ['<section id="findings"><h2>Findings</h2>']
    if not doc.findings:
        out.append('<p class="ok-text">No findings: the boot flow is sound.</p>')
    out.append('<div class="findings">')
    for i, f in enumerate(doc.findings):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value_html(v)}</td></tr>" for k, v in f.evidence.items())
        ref = f'<p class="ref">see {_e(f.reference)}</p>' if f.reference else ""
        out.append(f'<article class="finding" id="finding-{i}"><h3><code>{_e(f.id)}</code></h3>'
                   f"<p>{_e(f.title)}</p><table class=\"kv evidence\"><tbody>{rows}</tbody></table>{ref}</article>")
    out.append("</div></section>")
    return "\n".join(out)


def _jump_card_html(card: JumpCard, title: str) -> str:
    out = [f'<article class="jump-card"><h3>{_e(title)}</h3>']
    if not card.jumped:
        out.append(f'<p class="bad">The bootloader never reached the application\'s reset handler '
                   f"(application at 0x{card.app_address:08X}).</p>")
    else:
        assert card.address is not None and card.msp is not None and card.time_ns is not None
        where = f" ({card.address_symbol})" if card.address_symbol else ""
        rows = [("jump", f"to 0x{card.address:08X}{where} at {format_ns(card.time_ns)}", "n"),
                ("MSP at the jump", f"0x{card.msp:08X}", "n")]
        if card.vtor_at_jump is not None:
            ok = card.vtor_at_jump == card.app_address
            rows.append(("VTOR at the jump", f"0x{card.vtor_at_jump:08X}" + ("" if ok else
                         " (still the bootloader's table)"), "ok" if ok else "warn"))
        if card.vtor_after is not None:
            writes = ", ".join(f"0x{v:08X} at {format_ns(t)}" for t, v in card.vtor_writes) or "never written"
            ok = card.vtor_after == card.app_address
            rows.append(("VTOR after", f"0x{card.vtor_after:08X} ({writes})", "ok" if ok else "bad"))
        for s in card.left_running:
            rows.append((s.name, s.value, s.tone))
        fi = card.first_interrupt
        if fi is not None:
            whose = "the application's handler" if fi["in_application"] else "the BOOTLOADER's handler"
            name = f" ({fi['symbol']})" if fi["symbol"] else ""
            rows.append(("first interrupt", f"{fi['exception']} {format_ns(fi['after_jump_ns'])} after the jump: "
                                            f"handler 0x{fi['handler']:08X}{name}, {whose}, fetched "
                                            f"through VTOR 0x{fi['vtor']:08X}", "ok" if fi["in_application"] else "bad"))
        else:
            rows.append(("first interrupt", "none after the jump", "n"))
        out.append('<table class="kv"><tbody>' + "".join(
            f'<tr class="r-{tone}"><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v, tone in rows) + "</tbody></table>")
    if card.vectors:
        out.append('<table class="vectors"><thead><tr><th>#</th><th>vector</th><th>value</th><th>symbol</th>'
                   "<th>note</th></tr></thead><tbody>")
        for v in card.vectors:
            out.append(f'<tr class="r-{v.tone}"><td>{v.index}</td><td>{_e(v.name)}</td><td><code>0x{v.value:08X}'
                       f"</code></td><td>{_e(v.symbol)}</td><td>{_e(v.note)}</td></tr>")
        out.append("</tbody></table>")
    out.append("</article>")
    return "".join(out)


def _jump_section(doc: ReportDoc) -> str:
    cards = [(r, r.jump) for r in doc.runs if r.jump is not None]
    if not cards:
        return ""
    out = ['<section id="jump"><h2>The jump into the application</h2><div class="cards">']
    for r, card in cards:
        assert card is not None
        out.append(_jump_card_html(card, r.title))
    out.append("</div></section>")
    return "\n".join(out)


def _summary_section(doc: ReportDoc) -> str:
    if not doc.runs:
        return ""
    out = ['<section id="runs"><h2>Runs</h2><div class="cards">']
    for r in doc.runs:
        rows = "".join(f'<tr class="r-{tone}"><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v, tone in r.summary)
        out.append(f'<article class="run-card"><h3>{_e(r.title)}</h3><table class="kv"><tbody>{rows}</tbody>'
                   "</table></article>")
    out.append("</div></section>")
    return "\n".join(out)


def _uart_section(doc: ReportDoc) -> str:
    if not doc.runs:
        return ""
    out = ['<section id="uart"><h2>USART output</h2><div class="cards">']
    for r in doc.runs:
        for name, text in r.uart.items():
            body = _e(text) if text else '<span class="dim">(nothing)</span>'
            out.append(f'<article class="uart"><h3>{_e(r.title)}: {_e(name)}</h3><pre>{body}</pre></article>')
    out.append("</div></section>")
    return "\n".join(out)


def _events_section(doc: ReportDoc) -> str:
    if not doc.runs:
        return ""
    out = ['<section id="events"><h2>Event tables</h2>']
    for r in doc.runs:
        lanes = dict(r.timeline.lanes)
        out.append(f'<details class="events"><summary>{_e(r.title)}: {len(r.timeline.items)} items</summary>'
                   f'<table class="event-table" data-for="timeline-{_e(r.key)}"><thead><tr><th>time</th>'
                   "<th>duration</th><th>lane</th><th>what</th><th>detail</th><th>PC</th><th>symbol</th>"
                   "<th>reference</th></tr></thead><tbody>")
        for n, i in enumerate(r.timeline.items):
            dur = format_ns(i.duration_ns) if i.duration_ns else ""
            pc = f"0x{i.pc:08X}" if i.pc else ""
            out.append(f'<tr class="r-{i.tone}" data-i="{n}" data-s="{i.start_ns}" data-e="{i.end_ns}">'
                       f"<td>{_e(format_ns(i.start_ns))}</td><td>{_e(dur)}</td><td>{_e(lanes.get(i.lane, i.lane))}</td>"
                       f"<td>{_e(i.label)}</td><td>{_e(i.detail)}</td><td><code>{pc}</code></td>"
                       f"<td>{_e(i.symbol)}</td><td>{_e(i.reference)}</td></tr>")
        out.append("</tbody></table></details>")
    out.append("</section>")
    return "\n".join(out)


SWEEP_TITLES = {"dfu": "stayed in DFU", "app_ok": "application ok", "broken_app": "jumped into a broken image",
                "bricked": "bricked"}


def sweep_svg(view: SweepView) -> str:
    """Columns are the operations cut (top cell: cut before it, bottom: half-way through it)."""
    columns: list[int] = []
    for c in view.cells:
        if not c.after_last and (not columns or columns[-1] != c.index):
            columns.append(c.index)
    after = [c for c in view.cells if c.after_last]
    slots = columns + (["after"] if after else [])
    rows = max(1, -(-len(slots) // SWEEP_COLUMNS))
    label_w = 70
    row_h = 2 * (SWEEP_CELL + 2) + 14
    width = label_w + SWEEP_COLUMNS * (SWEEP_CELL + 2) + 10
    height = rows * row_h + 4
    by_slot: dict[Any, dict[str, Any]] = {}
    for c in view.cells:
        slot = "after" if c.after_last else c.index
        by_slot.setdefault(slot, {})[c.mode] = c
    out = [f'<svg class="sweep-grid" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="power-cut sweep: one cell per cut">']
    for n, slot in enumerate(slots):
        r, col = divmod(n, SWEEP_COLUMNS)
        x = label_w + col * (SWEEP_CELL + 2)
        y0 = r * row_h + 12
        if col == 0:
            out.append(f'<text class="addr" x="{label_w - 6}" y="{y0 + SWEEP_CELL - 2}" text-anchor="end">before</text>'
                       f'<text class="addr" x="{label_w - 6}" y="{y0 + 2 * SWEEP_CELL}" text-anchor="end">mid-op</text>')
        if col % 8 == 0 or slot == "after":
            text = "after" if slot == "after" else f"#{slot}"
            out.append(f'<text class="col-label" x="{x}" y="{y0 - 2}">{_e(text)}</text>')
        for k, mode in enumerate(("between", "mid")):
            c = by_slot.get(slot, {}).get(mode)
            if c is None:
                continue
            tip = f"{c.label} ({c.operation}): {c.outcome} — {c.evidence}"
            out.append(f'<rect class="cut o-{c.outcome}" data-outcome="{c.outcome}" x="{x}" '
                       f'y="{y0 + k * (SWEEP_CELL + 2)}" width="{SWEEP_CELL}" height="{SWEEP_CELL}">'
                       f"<title>{_e(tip)}</title></rect>")
    out.append("</svg>")
    return "".join(out)


def _sweep_section(view: SweepView | None) -> str:
    if view is None:
        return ""
    legend = "".join(f'<span class="legend-item"><svg width="14" height="14"><rect class="cut o-{k}" x="1" y="1" '
                     f'width="12" height="12"/></svg>{_e(SWEEP_TITLES[k])} <b>{view.counts.get(k, 0)}</b></span>'
                     for k in SWEEP_TITLES)
    problems = "".join(f'<li class="bad">{_e(p)}</li>' for p in view.problems)
    return (f'<section id="sweep"><h2>Power-cut sweep</h2><p class="explain">{len(view.cells)} cuts among the '
            f"{view.operations} flash operations of the download ({_e(view.erase_order)}); each cell is one cut, "
            "coloured by what the board did when powered on again with BOOT1 high. Hover a cell for the "
            f"evidence.</p><div class=\"legend\">{legend}</div>{sweep_svg(view)}"
            + (f"<ul>{problems}</ul>" if problems else "") + "</section>")


# -- the page ------------------------------------------------------------------------------------------

CSS = """
:root { --bg:#fff; --fg:#1d2330; --dim:#69707d; --line:#d9dde3; --card:#f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 24px 40px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", sans-serif; }
code, pre, .addr, .tick-label { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Consolas, monospace; }
h1 { font-size: 22px; margin: 0; } h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
.titlebar { display: flex; align-items: center; gap: 16px; margin-bottom: 8px; }
.verdict { padding: 3px 10px; border-radius: 12px; font-weight: 600; color: #fff; }
.v-ok { background: #2f9e44; } .v-bad { background: #e03131; }
table.kv { border-collapse: collapse; } table.kv th { text-align: left; padding: 2px 12px 2px 0; color: var(--dim);
  font-weight: 600; vertical-align: top; white-space: nowrap; } table.kv td { padding: 2px 0; vertical-align: top; }
.dim { color: var(--dim); } .bad { color: #c92a2a; } .ok-text { color: #2b8a3e; font-weight: 600; }
.chip { display: inline-block; background: #fff0f0; color: #c92a2a; border: 1px solid #ffc9c9; border-radius: 10px;
  padding: 0 8px; margin: 1px 2px; text-decoration: none; font-size: 12px; }
nav.toc { margin: 10px 0 0; font-size: 13px; } nav.toc a { color: #1c63b8; }
.explain { color: var(--dim); margin: 4px 0 8px; max-width: 1100px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; margin: 4px 0 10px; }
.legend-item { display: inline-flex; align-items: center; gap: 4px; }
.maps, .cards, .findings { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; } figcaption { font-size: 13px; margin-bottom: 4px; }
.layout-string { font-size: 12px; color: var(--dim); margin-bottom: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
svg text { font-size: 11px; fill: var(--fg); }
.addr { font-size: 10px; fill: var(--dim); }
rect.cell { stroke: #c3c8d0; stroke-width: 1; }
.s-untouched { fill: #f1f3f5; } .s-bootloader { fill: #495057; } .s-erased { fill: #a5d8ff; }
.s-programmed { fill: #2f9e44; } .s-erased_after_programmed { fill: #e64980; stroke: #a61e4d !important; stroke-width: 2 !important; }
.s-erased_beyond_end { fill: #e03131; stroke: #9b1c1c !important; }
rect.cell.beyond.s-untouched { fill: none; stroke-dasharray: 3 2; }
rect.cell.app { stroke: #343a40; }
rect.cell.boot-touched { stroke: #f08c00 !important; stroke-width: 3 !important; }
rect.band { fill: #dee2e6; stroke: #fff; stroke-width: 1; } rect.band-beyond { fill: #ffa8a8; }
rect.band-odd { fill: #ffd8a8; } .band-text { font-size: 9px; fill: #343a40; }
.chip-end { stroke: #e03131; stroke-width: 2; stroke-dasharray: 6 3; } .chip-end-text { font-size: 11px; fill: #c92a2a; }
svg.timeline { display: block; background: #fff; border: 1px solid var(--line); cursor: grab; user-select: none; }
.lane-bg { fill: #fff; } .lane-bg.odd { fill: #f6f7f9; } .lane-title { font-size: 12px; font-weight: 600; fill: #343a40; }
.tick { stroke: #e3e6ea; stroke-width: 1; } .tick-label { font-size: 10px; fill: var(--dim); }
.phase-bg { cursor: zoom-in; } .phase-bg.p0 { fill: #e7f5ff; } .phase-bg.p1 { fill: #fff4e6; }
.phase-text { font-size: 11px; fill: #343a40; pointer-events: none; }
rect.ev { stroke: none; }
.t-n { fill: #868e96; } .t-ok { fill: #2f9e44; } .t-info { fill: #4dabf7; } .t-busy { fill: #fab005; }
.t-warn { fill: #f08c00; } .t-bad { fill: #e03131; } .t-destroy { fill: #e64980; } .t-beyond { fill: #c92a2a; }
.t-jump { fill: #7048e8; } .t-bricked { fill: #212529; }
.marker line { stroke-width: 1.5; stroke-dasharray: 4 3; } .marker text { font-size: 10px; font-weight: 600; }
.m-jump line { stroke: #7048e8; } .m-jump text { fill: #5f3dc4; } .m-info line { stroke: #1c7ed6; }
.m-info text { fill: #1864ab; } .m-bad line { stroke: #e03131; } .m-bad text { fill: #c92a2a; }
.m-destroy line { stroke: #e64980; stroke-width: 2; } .m-destroy text { fill: #c2255c; }
.zoom-controls { margin-left: 12px; } .zoom-controls button { font-size: 12px; margin-right: 4px; }
.zoom-window { color: var(--dim); font-size: 12px; margin-left: 6px; }
article.finding, article.jump-card, article.run-card, article.uart { background: var(--card);
  border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
article.finding { width: 640px; border-left: 4px solid #e03131; } article.finding p { margin: 2px 0 6px; }
article.finding .ref { color: var(--dim); font-size: 12px; }
.evidence td, .evidence th { font-size: 12px; } .evidence ul { margin: 0; padding-left: 18px; }
dl.nested { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: 0 8px; }
dl.nested dt { color: var(--dim); } dl.nested dd { margin: 0; }
article.jump-card { width: 640px; } table.vectors { border-collapse: collapse; margin-top: 8px; font-size: 12px; }
table.vectors td, table.vectors th { padding: 1px 8px 1px 0; text-align: left; }
table.vectors tr.r-ok td { color: inherit; } tr.r-bad td, tr.r-bad th { color: #c92a2a; } tr.r-warn td { color: #d9480f; } tr.r-ok td { color: #2b8a3e; }
article.uart pre { margin: 0; white-space: pre-wrap; max-height: 240px; overflow: auto; font-size: 12px; }
article.uart { min-width: 400px; }
table.event-table { border-collapse: collapse; font-size: 12px; margin-top: 6px; }
table.event-table th, table.event-table td { border-bottom: 1px solid #eef0f3; padding: 1px 8px 1px 0; text-align: left;
  vertical-align: top; } table.event-table td:first-child { white-space: nowrap; cursor: zoom-in; }
table.event-table tr.r-destroy td { color: #a61e4d; } table.event-table tr.r-beyond td { color: #c92a2a; }
details.events { margin: 6px 0; } details.events summary { cursor: pointer; font-weight: 600; }
.cut { stroke: #fff; stroke-width: 1; } .o-dfu { fill: #74c0fc; } .o-app_ok { fill: #2f9e44; }
.o-broken_app { fill: #e03131; } .o-bricked { fill: #212529; } .col-label { font-size: 9px; fill: var(--dim); }
footer { margin-top: 32px; color: var(--dim); font-size: 12px; }
"""

# Zoom: re-place every element that carries data-s/data-e for a visible window [a, b] of emulated time.
JS = """
(function () {
  'use strict';
  function nice(span) {
    var raw = Math.max(span / 10, 1), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var ms = [1, 2, 5, 10];
    for (var i = 0; i < ms.length; i++) { if (ms[i] * p >= raw) { return ms[i] * p; } }
    return 10 * p;
  }
  function label(ns, step) {
    if (step >= 1e9 || (ns >= 1e9 && step >= 1e6)) { return (ns / 1e9).toFixed(Math.max(0, Math.ceil(-Math.log10(step / 1e9) - 1e-9))) + ' s'; }
    if (step >= 1e6) { return +(ns / 1e6).toPrecision(12) + ' ms'; }
    if (step >= 1e3) { return +(ns / 1e3).toPrecision(12) + ' \\u00b5s'; }
    return ns + ' ns';
  }
  var CHAR = 6.6;
  function setup(svg) {
    var NS = 'http://www.w3.org/2000/svg';
    var x0 = +svg.dataset.x0, x1 = +svg.dataset.x1, end = +svg.dataset.end;
    var a = 0, b = end;
    var height = +svg.getAttribute('height');
    var axis = svg.querySelector('g.axis');
    var tickTop = +(axis.querySelector('line') ? axis.querySelector('line').getAttribute('y1') : 0);
    var labelY = +(axis.querySelector('text') ? axis.querySelector('text').getAttribute('y') : 0);
    var els = Array.prototype.slice.call(svg.querySelectorAll('[data-s]'));
    var controls = document.querySelector('.zoom-controls[data-for="' + svg.id + '"]');
    var windowText = controls ? controls.querySelector('.zoom-window') : null;
    function X(t) { return x0 + (t - a) / (b - a) * (x1 - x0); }
    function draw() {
      els.forEach(function (el) {
        var s = +el.dataset.s, e = el.dataset.e === undefined ? s : +el.dataset.e;
        var tag = el.tagName.toLowerCase();
        if (tag === 'rect') {
          var xs = X(s), xe = X(e), min = +(el.dataset.min || 2);
          if (xe - xs < min) { xe = xs + min; }
          var hidden = xe < x0 - 4 || xs > x1 + 4;
          el.style.display = hidden ? 'none' : '';
          if (!hidden) {
            xs = Math.max(xs, x0 - 4); xe = Math.min(xe, x1 + 4);
            el.setAttribute('x', xs.toFixed(2)); el.setAttribute('width', Math.max(xe - xs, min).toFixed(2));
          }
        } else if (tag === 'line') {
          el.setAttribute('x1', X(s).toFixed(2)); el.setAttribute('x2', X(s).toFixed(2));
        } else if (tag === 'text' && el.classList.contains('marker-text')) {
          var xm = X(s), right = xm > x1 - CHAR * el.textContent.length - 6;
          el.setAttribute('text-anchor', right ? 'end' : 'start');
          el.setAttribute('x', (right ? xm - 3 : xm + 3).toFixed(2));
        } else if (tag === 'text') {
          var xl = Math.max(X(s), x0) + 4, xr = Math.min(X(e), x1);
          el.setAttribute('x', xl.toFixed(2));
          el.style.display = xr - xl >= CHAR * el.textContent.length + 4 ? '' : 'none';
        }
      });
      while (axis.firstChild) { axis.removeChild(axis.firstChild); }
      var step = nice(b - a);
      for (var t = Math.ceil(a / step) * step; t <= b; t += step) {
        var l = document.createElementNS(NS, 'line');
        l.setAttribute('class', 'tick'); l.setAttribute('x1', X(t)); l.setAttribute('x2', X(t));
        l.setAttribute('y1', tickTop); l.setAttribute('y2', height); axis.appendChild(l);
        var tx = document.createElementNS(NS, 'text');
        tx.setAttribute('class', 'tick-label'); tx.setAttribute('x', X(t) + 3); tx.setAttribute('y', labelY);
        tx.textContent = label(t, step); axis.appendChild(tx);
      }
      if (windowText) { windowText.textContent = a === 0 && b === end ? '' : 'showing ' + label(a, b - a) + ' \\u2013 ' + label(b, b - a); }
    }
    function zoomTo(na, nb) {
      var minSpan = 1000;
      if (nb - na < minSpan) { var mid = (na + nb) / 2; na = mid - minSpan / 2; nb = mid + minSpan / 2; }
      if (na < 0) { nb -= na; na = 0; }
      if (nb > end) { na -= nb - end; nb = end; }
      a = Math.max(0, na); b = Math.min(end, nb); draw();
    }
    function timeAt(clientX) {
      var r = svg.getBoundingClientRect(), px = (clientX - r.left) * (+svg.getAttribute('width') / r.width);
      return a + (Math.min(Math.max(px, x0), x1) - x0) / (x1 - x0) * (b - a);
    }
    svg.addEventListener('wheel', function (ev) {
      ev.preventDefault();
      var t = timeAt(ev.clientX), f = ev.deltaY < 0 ? 0.7 : 1 / 0.7;
      zoomTo(t - (t - a) * f, t + (b - t) * f);
    }, { passive: false });
    var drag = null;
    svg.addEventListener('mousedown', function (ev) { drag = { x: ev.clientX, a: a, b: b, moved: false }; });
    window.addEventListener('mousemove', function (ev) {
      if (!drag) { return; }
      var r = svg.getBoundingClientRect(), scale = (+svg.getAttribute('width') / r.width);
      var dt = (ev.clientX - drag.x) * scale / (x1 - x0) * (drag.b - drag.a);
      if (Math.abs(ev.clientX - drag.x) > 3) { drag.moved = true; }
      zoomTo(drag.a - dt, drag.b - dt);
    });
    window.addEventListener('mouseup', function () { setTimeout(function () { drag = null; }, 0); });
    svg.addEventListener('dblclick', function () { zoomTo(0, end); });
    Array.prototype.forEach.call(svg.querySelectorAll('rect.phase-bg'), function (r) {
      r.addEventListener('click', function () {
        if (drag && drag.moved) { return; }
        var s = +r.dataset.s, e = +r.dataset.e, pad = (e - s) * 0.02;
        zoomTo(s - pad, e + pad);
      });
    });
    if (controls) {
      Array.prototype.forEach.call(controls.querySelectorAll('button'), function (btn) {
        btn.addEventListener('click', function () {
          var z = btn.dataset.zoom, mid = (a + b) / 2, half = (b - a) / 2;
          if (z === 'in') { zoomTo(mid - half / 2, mid + half / 2); }
          else if (z === 'out') { zoomTo(mid - half * 2, mid + half * 2); }
          else { zoomTo(0, end); }
        });
      });
    }
    var table = document.querySelector('table.event-table[data-for="' + svg.id + '"]');
    if (table) {
      table.addEventListener('click', function (ev) {
        var row = ev.target.closest('tr[data-s]');
        if (!row) { return; }
        var s = +row.dataset.s, e = +row.dataset.e, span = Math.max(e - s, 1e6) * 6;
        zoomTo(s - span / 2, e + span / 2);
        svg.scrollIntoView({ behavior: 'smooth', block: 'center' });
      });
    }
    draw();
    // A link ending in #t=START-END (seconds) opens every timeline on that window.
    var m = /(?:^#|&)t=([0-9.]+)-([0-9.]+)/.exec(window.location.hash);
    if (m && +m[2] > +m[1]) { zoomTo(+m[1] * 1e9, +m[2] * 1e9); }
  }
  Array.prototype.forEach.call(document.querySelectorAll('svg.timeline'), setup);
}());
"""


def render_html(doc: ReportDoc) -> str:
    """The whole page as one string."""
    h = doc.header
    title = f"stm32-bootsim {doc.title}: " + " + ".join(i.name for i in h.images)
    body = [_header(doc), _nav(doc), _sweep_section(doc.sweep), _flash_section(doc), _timeline_section(doc),
            _findings_section(doc), _jump_section(doc), _summary_section(doc), _uart_section(doc),
            _events_section(doc)]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # An empty icon, so no browser asks the file system or a server for favicon.ico.
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        *[b for b in body if b],
        f"<footer>Generated by {_e(h.tool_version)} from the recorded boot-flow events and flash journal. "
        "Self-contained: no network access needed.</footer>",
        f"<script>{JS}</script>",
        "</body></html>",
    ])


def write_html(path: str | Path, doc: ReportDoc) -> Path:
    """Write the report; returns the path written.  Raises EmulatorError when it cannot."""
    p = Path(path)
    try:
        p.write_text(render_html(doc), encoding="utf-8")
    except OSError as e:
        raise EmulatorError(f"cannot write the report {path}: {e.strerror}") from None
    return p
