"""Power-cut sweep: cut the supply at the flash operations of a DFU download and
see what the next boot does (docs/SEED_BOOTLOADER.md defect 5, issue 7 item 3).

A *reference* download (BOOT1 low, the bootloader's own USB DFU, the hostside
client, then leave with BOOT1 high) lists every flash operation the bootloader
starts (program, page/mass erase, out-of-range erase, option-byte operations)
and records what the application prints when the download is complete.  Then,
for each selected cut point, a fresh board repeats the same download until
that operation and the supply is cut (``Machine.power_cut``):

* ``between``: at the instant operation *k* starts, before it has changed a bit
  (the flash then holds exactly operations 0..k-1; ``k == len(ops)`` is "after
  the last operation");
* ``mid``: half-way through operation *k*'s busy time, so the flash model
  leaves it half done (``firmware_models.flash``: half the bits of a program
  cleared, the first half of an erased page 0xFF).

The board is powered on again with BOOT1 high (flash persists, SRAM and every
register start afresh) and runs for ``run_ns``.  Each cut is classified:

* ``dfu``: the bootloader never left itself and its USB device is attached;
* ``app_ok``: it jumped into the application, which printed exactly what it
  printed after the reference download and stopped cleanly;
* ``broken_app``: it jumped (into the application region, or anywhere outside
  the bootloader and faulted there) and the application did not behave: a
  fault, hang, lockup, other output or none;
* ``bricked``: no jump and no USB device.

Cost.  Replaying the download up to each cut (``jobs=0``, where ``fork`` is
missing) costs about 0.5 s per trial.  Instead one download runs and forks a
snapshot at each cut (``jobs`` at once, :class:`_Snapshots`).  Cuts that leave
flash exactly as an earlier cut did (erasing a page that is already blank) are
not run: their row names the trial it equals, because the next boot depends only
on the flash content.  Going further, the next boot depends only on the flash
bytes it *reads* (:mod:`emulator.bootflow.boot_memo`): a cut whose flash holds
the same values where an earlier boot read the download's bytes is that boot
again, so it takes its observation without a fork; a bootloader that finds its
commit record blank reads nothing else, and ``points="all"`` on boot_fixed +
app_big (50,605 cuts) boots 6 of them.  The verdict rule is the same for every
cut.  The default selection keeps every erase, the first and last programs of
each page, every operation outside the image (a commit record), the last few
operations and a deterministic stride.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import usb.core
from unicorn import UC_HOOK_CODE

from emulator.bootflow.boot_memo import BootMemo, BootReads, merge_ranges
from emulator.bootflow.scenario import (
    FlashOutcome,
    Triggers,
    check_application,
    read_application,
    record_results,
    run_session,
)
from emulator.core.machine import Machine
from emulator.core.session import BOOT1_PIN, BkpSetting, Board, BoardOptions, PinSetting, build_board
from emulator.usb.host import UsbError
from emulator.usb.target import attach
from firmware_models import flash_journal as fj
from firmware_models.flash import FlashOperation
from hostside.dfu import DfuException
from hostside.dfuse_layout import LayoutError, RegionError
from hostside.files import LoadedFile
from hostside.selection import DfuSelector

BETWEEN, MID = "between", "mid"
MODES = (BETWEEN, MID)
OUTCOMES = ("dfu", "app_ok", "broken_app", "bricked")
ERASE_KINDS = frozenset({fj.PAGE_ERASE, fj.MASS_ERASE, fj.OUT_OF_RANGE_ERASE, fj.OPTION_ERASE})
DEFAULT_RUN_NS = 500_000_000  # the boot after the cut: ample for app_small and for DFU's init
DEFAULT_EDGE = 3  # programs kept at the start and at the end of each page
DEFAULT_STRIDE_POINTS = 16  # programs kept evenly spread through the rest
DEFAULT_TAIL = 6  # the download's last operations (the commit/manifest end)


class _PowerCut(Exception):
    """Raised out of the host's wait when the supply is cut, ending the DFU session."""


# -- flash operations ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FlashOp:
    """One flash operation the bootloader started, as the FPEC saw it."""

    index: int
    kind: str
    address: int | None
    length: int
    start_ns: int
    duration_ns: int
    area: str
    offset: int
    old: bytes
    new: bytes
    pc: int

    @property
    def changes(self) -> bool:
        """Whether finishing it changes any byte (erasing a blank page does not)."""
        return bool(self.new) and self.area != "none" and self.old != self.new

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "address": self.address, "length": self.length,
                "start_ns": self.start_ns, "duration_ns": self.duration_ns, "changes": self.changes,
                "pc": self.pc}


class _Tap:
    """Watches the FPEC of one machine from outside: every operation it starts
    and finishes (``FlashInterface.operation_listeners``), and the host's waits
    (``Machine.run_ns``, wrapped on this instance), so a cut lands exactly at an
    operation.

    At each of ``cuts`` (in download order) it calls ``on_cut(point, op)`` at the
    cut's instant: the replay powers the board off there and ends the session
    (raising :class:`_PowerCut`); the snapshot runner forks a child that does so
    and carries on with the download in the parent."""

    def __init__(self, machine: Machine, cuts: Sequence[CutPoint] = (),
                 on_cut: Callable[[CutPoint, FlashOp | None], None] | None = None) -> None:
        self.m = machine
        self.flash = machine.flash
        self.pending = sorted(cuts)
        self.on_cut = on_cut or self._power_cut
        self.ops: list[FlashOp] = []
        self.completed = 0
        self.resets_at_start = machine.resets
        self.cut_at_ns: int | None = None  # mid: when to cut, once op k has started
        self.cut_now: CutPoint | None = None
        self.fired: list[CutPoint] = []
        self.cut_op: FlashOp | None = None
        self.cut_time_ns: int | None = None
        self.ended = False  # the replay's cut: nothing more is watched
        self.flash.operation_listeners.append(self._on_operation)
        self._orig_run_ns = machine.run_ns
        machine.run_ns = self._run_ns  # type: ignore[method-assign]

    @property
    def cut_done(self) -> bool:
        return bool(self.fired)

    def detach(self) -> None:
        self.flash.operation_listeners.remove(self._on_operation)
        self.m.__dict__.pop("run_ns", None)

    @property
    def counting(self) -> bool:
        # Only the download: after the bootloader resets the chip the application runs.
        return self.m.resets == self.resets_at_start and not self.ended

    def _next(self) -> CutPoint | None:
        return self.pending[0] if self.pending else None

    def _on_operation(self, what: str, op: FlashOperation) -> None:
        if not self.counting:
            return
        if what == "start":
            self._started(op)
        else:
            self._completed()

    def _started(self, op: FlashOperation) -> None:
        fop = FlashOp(len(self.ops), op.kind, op.journal_address, len(op.new), op.start_ns,
                      op.due_ns - op.start_ns, op.area, op.offset, bytes(op.old), bytes(op.new), op.pc)
        self.ops.append(fop)
        cut = self._next()
        if cut is not None and not cut.after_last and cut.index == fop.index:
            if cut.mode == BETWEEN:
                self.cut_now = cut
            else:
                self.cut_at_ns = op.start_ns + (op.due_ns - op.start_ns) // 2
            self.m.stop_soon()  # back to _run_ns after this instruction

    def _completed(self) -> None:
        self.completed += 1
        cut = self._next()
        if cut is not None and cut.mode == BETWEEN and cut.index == self.completed and cut.after_last:
            self.cut_now = cut
            self.m.stop_soon()

    def _run_ns(self, ns: int) -> Any:
        """``Machine.run_ns`` that never runs past a cut, and cuts when it is due."""
        target = self.m.now_ns + max(0, ns)
        last = None
        while True:
            self._maybe_cut()
            limit = target if self.cut_at_ns is None else min(target, self.cut_at_ns)
            if self.m.now_ns >= limit:
                if self.cut_at_ns is not None and self.m.now_ns >= self.cut_at_ns:
                    continue  # a mid cut falls due exactly at the target: take it before returning
                return last
            armed_before = self.cut_now is not None or self.cut_at_ns is not None
            last = self._orig_run_ns(limit - self.m.now_ns)
            self._maybe_cut()
            if (self.cut_now is not None or self.cut_at_ns is not None) and not armed_before:
                continue  # woken by our own trigger (stop_soon): run on towards the cut
            return last

    def _maybe_cut(self) -> None:
        while True:
            cut = self.cut_now
            if cut is None and self.cut_at_ns is not None and self.m.now_ns >= self.cut_at_ns:
                cut = self._next()
            if cut is None:
                return
            self.cut_now = None
            if cut.mode == MID:
                self.cut_at_ns = None
            self.pending.pop(0)
            self.fired.append(cut)
            op = self.ops[cut.index] if cut.index < len(self.ops) else None
            self.cut_op = op
            self.cut_time_ns = self.m.now_ns
            self.on_cut(cut, op)
            # The next cut may be due at this very instant (between k, then mid k of a zero-length op).
            nxt = self._next()
            if nxt is None or nxt.index != cut.index or nxt.mode != MID or self.cut_at_ns is not None:
                return
            fop = self.ops[nxt.index]
            self.cut_at_ns = fop.start_ns + fop.duration_ns // 2

    def _power_cut(self, cut: CutPoint, op: FlashOp | None) -> None:
        self.ended = True
        self.m.power_cut()
        raise _PowerCut(f"power cut at {self.m.now_ns} ns")


# -- cut points and their selection -------------------------------------------------------------

@dataclass(frozen=True, order=True)
class CutPoint:
    index: int  # the operation cut; == number of operations with ``after_last``
    mode: str
    after_last: bool = False

    @property
    def label(self) -> str:
        return "after last op" if self.after_last else f"{self.mode} #{self.index}"


PointSpec = str | Iterable[int] | Callable[[Sequence[FlashOp]], Iterable[int]]


def select_points(ops: Sequence[FlashOp], points: PointSpec = "default", *,
                  page_size: int = 2048, image_range: tuple[int, int] | None = None,
                  edge: int = DEFAULT_EDGE, stride_points: int = DEFAULT_STRIDE_POINTS,
                  tail: int = DEFAULT_TAIL) -> list[CutPoint]:
    """The cut points to try, in order, deterministically.

    ``"all"``: both modes at every operation, plus after the last one.
    ``"default"``: every erase; per page, the first and last ``edge`` programs;
    every operation outside ``image_range`` (e.g. a commit record); the last
    ``tail`` operations; about ``stride_points`` programs evenly spread through
    the rest; and after the last operation.  An iterable of indices, or a
    callable that picks them from the reference operations: those operations
    (both modes) and after the last one."""
    n = len(ops)
    chosen: set[int] = set()
    if callable(points):
        points = list(points(ops))
    if points == "all":
        chosen = set(range(n))
    elif points == "default":
        programs_by_page: dict[int, list[int]] = {}
        for op in ops:
            if op.kind in ERASE_KINDS:
                chosen.add(op.index)
                continue
            if op.address is None:
                chosen.add(op.index)
                continue
            if image_range is not None and not image_range[0] <= op.address < image_range[1]:
                chosen.add(op.index)
            programs_by_page.setdefault(op.address // page_size, []).append(op.index)
        for indices in programs_by_page.values():
            chosen.update(indices[:edge])
            chosen.update(indices[-edge:])
        chosen.update(range(max(0, n - tail), n))
        programs = [op.index for op in ops if op.kind not in ERASE_KINDS]
        if programs and stride_points > 0:
            step = max(1, len(programs) // stride_points)
            chosen.update(programs[step // 2::step])
    elif isinstance(points, str):
        raise ValueError(f"points must be 'default', 'all' or operation indices, not {points!r}")
    else:
        for i in points:
            if not 0 <= i <= n:
                raise ValueError(f"cut point {i} is outside 0..{n} (the download has {n} flash operations)")
            if i < n:
                chosen.add(i)
    result = [CutPoint(i, mode) for i in sorted(chosen) for mode in MODES]
    result.append(CutPoint(n, BETWEEN, after_last=True))
    return result


def parse_points(text: str) -> str | list[int]:
    """``default``, ``all`` or a comma list of operation indices and ranges (``0,5,10-12``)."""
    text = text.strip()
    if text in ("default", "all"):
        return text
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x, 0) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part, 0))
        except ValueError:
            raise ValueError(f"bad cut point {part!r}: expected default, all, or indices like 0,5,10-12") from None
    return out


# -- classification -------------------------------------------------------------------------------

@dataclass
class BootObservation:
    """What the board did after power came back."""

    jumped: bool
    jump_address: int | None = None
    jump_msp: int | None = None
    jump_time_ns: int | None = None
    stop_kind: str = ""
    stop_detail: str = ""
    stop_clean: bool = False
    uart_after_jump: str = ""
    uart_total: str = ""
    usb_attached: bool = False
    faults: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"jumped": self.jumped, "jump_address": self.jump_address, "jump_msp": self.jump_msp,
                "jump_time_ns": self.jump_time_ns, "stop": {"reason": self.stop_kind, "detail": self.stop_detail},
                "uart_after_jump": self.uart_after_jump, "usb_attached": self.usb_attached,
                "faults": self.faults}


def classify(obs: BootObservation, expected_uart: str | None, expected_stop: str | None = None) -> str:
    """``dfu`` / ``app_ok`` / ``broken_app`` / ``bricked`` (see the module docstring).

    ``expected_uart`` is what the application printed after the complete
    reference download; ``None`` (the reference itself failed) means no boot
    can count as ``app_ok``."""
    if obs.jumped:
        behaved = obs.stop_clean or (expected_stop is not None and obs.stop_kind == expected_stop)
        if expected_uart is not None and behaved and obs.uart_after_jump == expected_uart and not obs.faults:
            return "app_ok"
        return "broken_app"
    return "dfu" if obs.usb_attached else "bricked"


def observe_boot(machine: Machine, app_region: tuple[int, int], boot_region: tuple[int, int],
                 run_ns: int, after: Triggers | None = None, reads: BootReads | None = None) -> BootObservation:
    """Power the board on with the after-download triggers (default: BOOT1 high) and run it,
    watching for the jump out of the bootloader: the first instruction executed in ``app_region``,
    or a fault whose PC lies outside ``boot_region`` (a jump to an erased reset vector faults
    before any instruction runs).  Backup registers named in ``after`` are set after power-on,
    as a battery on VBAT would have kept them (RM0008 §6.1).  ``reads`` watches the boot's
    flash reads (:mod:`emulator.bootflow.boot_memo`)."""
    m = machine
    after = after or Triggers(boot1=True)
    if after.boot1 is not None:
        m.drive_pin(*BOOT1_PIN, after.boot1)
    for port, pin, level in after.pins:
        m.drive_pin(port, pin, level)
    m.power_on()
    for n, value in after.bkp:
        m.bkp[f"DR{n}"] = value & 0xFFFF
    faults_before = len(m.faults)
    uart_before = len(m.uart_output.get(1, b""))
    jump: dict[str, int] = {}

    def hook(uc, address, size, _ud):  # noqa: ANN001 - Unicorn callback
        if not jump:
            jump.update(address=address, msp=m.reg("msp"), time_ns=m.now_ns,
                        uart=len(m.uart_output.get(1, b"")))
            m.stop_soon()

    if reads is not None:
        reads.start()
    handle = m.uc.hook_add(UC_HOOK_CODE, hook, begin=app_region[0], end=app_region[1] - 1)
    m.uc.ctl_remove_cache(app_region[0], app_region[1])
    t_end = m.now_ns + run_ns
    try:
        stop = m.run(max_ns=run_ns, until=lambda: bool(jump))
    finally:
        m.uc.hook_del(handle)
    if reads is not None and jump:
        reads.abandon()  # a boot that jumps is never reused: let the application run unwatched
    if jump and stop.kind == "condition" and m.now_ns < t_end:
        stop = m.run(max_ns=t_end - m.now_ns)
    faults = [{"cause": f.cause, "pc": f.pc, "address": f.address, "time_ns": f.time_ns,
               "symbol": m.symbol(f.pc)} for f in m.faults[faults_before:]]
    if not jump:
        outside = [f for f in faults if not boot_region[0] <= f["pc"] < boot_region[1]]
        if outside:
            jump.update(address=outside[0]["pc"], msp=m.reg("msp"), time_ns=outside[0]["time_ns"],
                        uart=len(m.uart_output.get(1, b"")))
    if reads is not None:
        reads.finish(faulted=bool(faults), jumped=bool(jump))
    uart = bytes(m.uart_output.get(1, b""))
    return BootObservation(
        jumped=bool(jump), jump_address=jump.get("address"), jump_msp=jump.get("msp"),
        jump_time_ns=jump.get("time_ns"), stop_kind=stop.kind, stop_detail=stop.detail, stop_clean=stop.clean,
        uart_after_jump=uart[jump["uart"]:].decode("latin-1") if jump else "",
        uart_total=uart[uart_before:].decode("latin-1"), usb_attached=m.usb.attached(), faults=faults)


# -- the download ---------------------------------------------------------------------------------

@dataclass
class _Plan:
    boot_image: str
    app_file: str
    loaded: LoadedFile
    chip: str | None
    erase_order: str
    flash_timing: str
    address_given: bool = False
    selector: DfuSelector | None = None
    before: Triggers = field(default_factory=Triggers)
    after: Triggers = field(default_factory=lambda: Triggers(boot1=True))
    app_start: int | None = None  # known from the file or --address, else from the reference download
    app_size: int = 0

    @property
    def app_range(self) -> tuple[int, int]:
        assert self.app_start is not None
        return self.app_start, self.app_start + self.app_size


def _load_plan(boot_image: str, app_file: str, app_address: int | None, chip: str | None,
               erase_order: str, flash_timing: str) -> _Plan:
    loaded = read_application(app_file, app_address)
    check_application(app_file, loaded, boot_image=boot_image, chip=chip, app_address=app_address)
    plan = _Plan(boot_image, app_file, loaded, chip, erase_order, flash_timing, address_given=app_address is not None)
    if loaded.image is not None:
        plan.app_start, plan.app_size = loaded.image.start, loaded.image.size
    else:
        plan.app_size = len(loaded.raw)
    return plan


def _new_board(plan: _Plan) -> Board:
    b = plan.before
    return build_board(BoardOptions(image=plan.boot_image, chip=plan.chip,
                                    boot1=False if b.boot1 is None else b.boot1, pins=b.pins, bkp=b.bkp,
                                    flash_timing=plan.flash_timing))


def _download(board: Board, plan: _Plan, outcome: FlashOutcome | None = None) -> str | None:
    """The same session as ``flash_and_boot`` (DfuSe or plain DFU, by the device's conventions):
    download, the after-download triggers, leave.  Returns an error text, or None.  A power cut
    raises :class:`_PowerCut`."""
    target = attach(board)
    outcome = outcome or FlashOutcome(board, plan.app_start or 0, plan.app_size, plan.erase_order)
    try:
        run_session(target, outcome, plan.loaded, selector=plan.selector, erase_order=plan.erase_order,
                    verify=False, after=plan.after, leave="auto", address_given=plan.address_given, watch=False)
    except (DfuException, LayoutError, RegionError, UsbError, usb.core.USBError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _flash_digest(m: Machine) -> str:
    return _digest(bytes(m.flash.storage), m.flash.option_bytes)


def _digest(main: bytes, options: bytes) -> str:
    h = hashlib.sha256(main)
    h.update(options)
    return h.hexdigest()[:16]


# -- the sweep ------------------------------------------------------------------------------------

@dataclass
class Trial:
    point: CutPoint
    outcome: str
    op: FlashOp | None
    observation: BootObservation | None = None
    cut_time_ns: int | None = None
    changed_bytes: int | None = None  # bytes of the cut operation written before the cut
    flash_digest: str | None = None
    prediction_ok: bool | None = None  # between cuts: flash == ops 0..k-1 of the reference
    same_as: str | None = None  # label of the trial with the same flash (not replayed)
    download_error: str | None = None
    wall_s: float = 0.0
    # Label of the trial whose boot this cut's boot is (boot_memo): not a row field, since
    # which trial ran first depends on the order and the sharding, and the row is the same.
    boot_same_as: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"point": self.point.label, "index": self.point.index, "mode": self.point.mode,
                "after_last": self.point.after_last, "outcome": self.outcome,
                "op": None if self.op is None else self.op.as_dict(), "cut_time_ns": self.cut_time_ns,
                "changed_bytes": self.changed_bytes, "flash_digest": self.flash_digest,
                "prediction_ok": self.prediction_ok, "same_as": self.same_as,
                "download_error": self.download_error,
                "boot": None if self.observation is None else self.observation.as_dict(),
                "wall_s": round(self.wall_s, 3)}


@dataclass
class SweepReport:
    boot_image: str
    app_file: str
    erase_order: str
    ops: list[FlashOp]
    reference: BootObservation
    reference_error: str | None
    expected_uart: str | None
    trials: list[Trial] = field(default_factory=list)
    wall_s: float = 0.0
    flash_problem: str | None = None  # the reference download left other bytes than were sent
    # For the HTML report: the reference board (its events and flash journal), the
    # application's address range and the layout string the device presented.
    reference_board: Board | None = field(default=None, repr=False)
    app_range: tuple[int, int] | None = None
    layout_string: str | None = None
    shard: tuple[int, int] | None = None  # (k, n): this report holds shard k of n
    booted: int = 0  # trials whose boot ran
    boots_reused: int = 0  # trials whose boot was an earlier trial's (same flash bytes read)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(OUTCOMES, 0)
        for t in self.trials:
            c[t.outcome] = c.get(t.outcome, 0) + 1
        return c

    @property
    def jumps_into_broken_image(self) -> bool:
        return any(t.outcome == "broken_app" for t in self.trials)

    @property
    def clean(self) -> bool:
        """No cut leads to a jump into a half-written image, and none bricks the board."""
        return not any(t.outcome in ("broken_app", "bricked") for t in self.trials) and not self.problems

    @property
    def problems(self) -> list[str]:
        return self.reference_problems + trial_problems([t.as_dict() for t in self.trials])

    @property
    def reference_problems(self) -> list[str]:
        out = []
        if self.reference_error:
            out.append(f"reference download failed: {self.reference_error}")
        if self.flash_problem:
            out.append(self.flash_problem)
        if self.expected_uart is None:
            out.append("the application did not run cleanly after the complete reference download")
        return out

    def as_dict(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for op in self.ops:
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
        return {"boot_image": self.boot_image, "app_file": self.app_file, "erase_order": self.erase_order,
                "operations": len(self.ops), "operation_kinds": kinds,
                "reference": {"error": self.reference_error, "expected_uart": self.expected_uart,
                              "boot": self.reference.as_dict()},
                "counts": self.counts(), "clean": self.clean,
                "jumps_into_broken_image": self.jumps_into_broken_image, "problems": self.problems,
                "reference_problems": self.reference_problems,
                "trials": [t.as_dict() for t in self.trials], "wall_s": round(self.wall_s, 3),
                "booted": self.booted, "boots_reused": self.boots_reused,
                "shard": list(self.shard) if self.shard else None}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def sweep(boot_image: str, app_file: str, *, points: PointSpec = "default",
          erase_order: str = "all-first", chip: str | None = None, run_ns: int = DEFAULT_RUN_NS,
          app_address: int | None = None, flash_timing: str = "typical", dedupe: bool = True,
          progress: Callable[[Trial], None] | None = None, selector: DfuSelector | None = None,
          boot1: bool = False, boot1_after: bool = True, pins: Sequence[PinSetting] = (),
          bkp: Sequence[BkpSetting] = (), pins_after: Sequence[PinSetting] = (),
          bkp_after: Sequence[BkpSetting] = (), jobs: int | None = None,
          shard: tuple[int, int] | None = None, reuse_boots: bool = True,
          planned: Callable[[int], None] | None = None) -> SweepReport:
    """Download ``app_file`` through ``boot_image``'s DFU and cut the power at the
    selected flash operations; see the module docstring.  ``dedupe=False`` runs
    every cut even when its flash would equal an earlier one's.  ``jobs``: trials
    run in forked snapshots of one download, that many at once (default: every
    core); 0 replays the download from reset for each cut.  ``shard=(k, n)`` runs
    every n-th trial from the k-th.  ``reuse_boots`` (snapshots only): a cut whose flash holds
    the same bytes where an earlier cut's boot read the download's flash boots exactly like
    it and takes its observation (:mod:`emulator.bootflow.boot_memo`); False boots every
    cut.  ``planned`` is told how many trials will run (cuts that leave the same flash as an
    earlier one take its row) once the reference has listed them.  The
    triggers are those of
    :func:`emulator.bootflow.scenario.flash_and_boot`; every reboot after a cut uses the
    after-download ones."""
    t_start = time.perf_counter()
    if jobs is None:
        jobs = os.cpu_count() or 1
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: K must be in 0..N-1")
    plan = _load_plan(boot_image, app_file, app_address, chip, erase_order, flash_timing)
    plan.selector = selector
    plan.before = Triggers(boot1, pins, bkp)
    plan.after = Triggers(boot1_after, pins_after, bkp_after)

    # Reference: the whole download, the bootloader's own reset, the application.
    board = _new_board(plan)
    m = board.machine
    initial = bytes(m.flash.storage)
    tap = _Tap(m)
    outcome = FlashOutcome(board, plan.app_start or 0, plan.app_size, erase_order,
                           image_bytes=bytes(plan.loaded.image.segments[0].data) if plan.loaded.image
                           else plan.loaded.raw)
    error = _download(board, plan, outcome)
    tap.detach()
    ops = tap.ops
    flash_problem = _reference_flash_problem(outcome)
    if plan.app_start is None:  # a .bin on a plain DFU bootloader: where it landed
        plan.app_start = outcome.landed_at if outcome.landed_at is not None else outcome.app_address
    app_range = plan.app_range
    flash_end = m.chip.flash_base + m.chip.flash_size
    region = (app_range[0], flash_end)
    boot_region = (m.chip.flash_base, app_range[0])
    ref = _observe_after_leave(m, region, boot_region, run_ns, plan.after)
    expected_uart = ref.uart_after_jump if ref.jumped and ref.stop_clean and not ref.faults and not error else None
    report = SweepReport(boot_image, app_file, erase_order, ops, ref, error, expected_uart,
                         flash_problem=flash_problem, reference_board=board, app_range=app_range,
                         layout_string=outcome.layout_string)

    page = m.flash.page_size
    chosen = select_points(ops, points, page_size=page, image_range=app_range)
    state_of = _state_keys(ops)
    # One trial per predicted flash state; a cut that leaves the same flash as an earlier one
    # is not run again (the next boot depends only on the flash).  Sharding splits the trials
    # to run, and each shard keeps the cuts that repeat its own trials, so the shards' rows
    # together are exactly the unsharded sweep's.
    owner: dict[CutPoint, CutPoint] = {}
    first_of: dict[Any, CutPoint] = {}
    for point in chosen:
        key = state_of(point)
        if dedupe and key is not None:
            owner[point] = first_of.setdefault(key, point)
        else:
            owner[point] = point
    to_run = [pt for pt in chosen if owner[pt] == pt]
    if shard is not None:
        k, n = shard
        to_run = to_run[k::n]
    mine = set(to_run)
    report.shard = shard
    if planned is not None:
        planned(len(to_run))
    results: dict[CutPoint, Trial] = {}

    def done(trial: Trial) -> None:
        results[trial.point] = trial
        if progress is not None:
            progress(trial)

    args = (app_range, region, boot_region, run_ns, expected_uart, initial, ops)
    if jobs is not None and jobs > 0 and hasattr(os, "fork"):
        snapshots = _Snapshots(plan, *args[1:], jobs=jobs, on_trial=done, reuse_boots=reuse_boots)
        missed = snapshots.run(to_run)
        report.booted = snapshots.booted + len(missed)
        for point in missed:  # the download ended before them (a DFU error): say so, as a replay would
            done(_run_trial(plan, point, None, *args[1:]))
    else:
        report.booted = len(to_run)
        for point in to_run:
            t0 = time.perf_counter()
            trial = _run_trial(plan, point, ops[point.index] if point.index < len(ops) else None, *args[1:])
            trial.wall_s = time.perf_counter() - t0
            done(trial)
    for point in chosen:
        first = owner[point]
        if first not in mine:
            continue
        trial = results[first]
        if trial.boot_same_as is not None and point == first:
            report.boots_reused += 1
        if point != first:
            op = ops[point.index] if point.index < len(ops) else None
            trial = Trial(point, trial.outcome, op, trial.observation, flash_digest=trial.flash_digest,
                          same_as=first.label)
        report.trials.append(trial)
    report.wall_s = time.perf_counter() - t_start
    return report


def trial_problems(trials: Sequence[dict[str, Any]]) -> list[str]:
    """Rows whose cut did not happen as planned (from ``Trial.as_dict`` rows)."""
    out = [f"{t['point']}: replay diverged from the reference (flash differs)" for t in trials
           if t["prediction_ok"] is False]
    return out + [f"{t['point']}: {t['download_error']}" for t in trials if t["download_error"]]


def merge_shards(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``--json`` reports of the shards of one sweep, as the unsharded sweep's report.

    Each shard ran every N-th distinct trial and kept the cuts that repeat them, so the
    union of their rows, in cut order, is the whole sweep; counts, problems and the
    verdict are worked out again from the rows."""
    if not docs:
        raise ValueError("no sweep reports to merge")
    same = ("boot_image", "app_file", "erase_order", "operations")
    first = docs[0]
    for doc in docs[1:]:
        for key in same:
            if doc.get(key) != first.get(key):
                raise ValueError(f"these reports are not shards of one sweep: {key} differs "
                                 f"({first.get(key)!r} / {doc.get(key)!r})")
    shards = sorted(tuple(d["shard"]) for d in docs if d.get("shard"))
    n = shards[0][1] if shards else 1
    if shards and (len(shards) != len(docs) or shards != [(k, n) for k in range(n)]):
        raise ValueError(f"the reports are not shards 0..{n - 1} of {n}, each once: {shards}")
    mode_order = {m: i for i, m in enumerate(MODES)}
    trials = sorted((t for d in docs for t in d["trials"]),
                    key=lambda t: (t["index"], mode_order[t["mode"]], t["after_last"]))
    counts = dict.fromkeys(OUTCOMES, 0)
    for t in trials:
        counts[t["outcome"]] += 1
    problems = list(first["reference_problems"]) + trial_problems(trials)
    summed = ("wall_s", "booted", "boots_reused")
    merged = {k: v for k, v in first.items() if k not in ("trials", "counts", "clean", "problems", "shard",
                                                          "jumps_into_broken_image", *summed)}
    merged.update(counts=counts, trials=trials, problems=problems, shard=None,
                  jumps_into_broken_image=counts["broken_app"] > 0,
                  clean=counts["broken_app"] == 0 and counts["bricked"] == 0 and not problems,
                  wall_s=round(sum(d.get("wall_s", 0.0) for d in docs), 3),
                  booted=sum(d.get("booted", 0) for d in docs),
                  boots_reused=sum(d.get("boots_reused", 0) for d in docs))
    return merged


def _observe_after_leave(m: Machine, app_region: tuple[int, int], boot_region: tuple[int, int],
                         run_ns: int, after: Triggers | None = None) -> BootObservation:
    """The reference boot: after leave the bootloader resets the chip itself; power
    it off and on so the reference boots exactly like the trials do."""
    m.power_cut()
    return observe_boot(m, app_region, boot_region, run_ns, after)


def _reference_flash_problem(outcome: FlashOutcome) -> str | None:
    """The flash model after the complete reference download against the image sent (whatever
    the DFU exchange said): None when it holds every byte."""
    if not outcome.download_ok:
        return None
    record_results(outcome, 0)
    c = outcome.flash_check
    if c is None or c["ok"]:
        return None
    if c.get("problem"):
        return f"reference download: {c['problem']}"
    where = ", ".join(f"0x{d['address']:08X}" for d in c["differences"])
    return (f"reference download: the flash differs from the image sent in {c['differing_bytes']} of "
            f"{c['compared']} bytes, first at 0x{c['first_difference']:08X} ({where})")


def _state_keys(ops: Sequence[FlashOp]) -> Callable[[CutPoint], Any]:
    """A key equal for two cuts exactly when the flash they leave is predicted equal:
    between k leaves the changing operations before k done; a mid cut of an
    operation that changes nothing leaves the same."""
    done_before = [0]
    for op in ops:
        done_before.append(done_before[-1] + (1 if op.changes else 0))

    def key(point: CutPoint) -> Any:
        k = point.index
        if point.mode == BETWEEN or not ops[k].changes:
            return ("state", done_before[k])
        return ("mid", k)

    return key


def _predicted_flash(initial: bytes, ops: Sequence[FlashOp], k: int) -> bytes:
    flash = bytearray(initial)
    for op in ops[:k]:
        if op.area == "main" and op.new:
            flash[op.offset:op.offset + len(op.new)] = op.new
    return bytes(flash)


def _run_trial(plan: _Plan, point: CutPoint, op: FlashOp | None, region: tuple[int, int],
               boot_region: tuple[int, int], run_ns: int, expected_uart: str | None, initial: bytes,
               ops: Sequence[FlashOp]) -> Trial:
    """One cut by replaying the download from reset up to it (where ``fork`` is not available)."""
    board = _new_board(plan)
    m = board.machine
    tap = _Tap(m, [point])
    error: str | None = None
    try:
        error = _download(board, plan)
    except _PowerCut:
        pass
    finally:
        tap.detach()
    if not tap.cut_done:
        # The cut never came (the replay diverged, or a DFU error ended it early).
        error = error or f"the download ended after {len(tap.ops)} operations, before {point.label}"
        m.power_cut()
    predicted = _predicted_flash(initial, ops, point.index) if point.mode == BETWEEN else None
    return _after_cut(m, plan, point, op if op is not None else tap.cut_op, tap.cut_time_ns, region,
                      boot_region, run_ns, expected_uart, predicted, error if not tap.cut_done else None)


def _after_cut(m: Machine, plan: _Plan, point: CutPoint, op: FlashOp | None, cut_time_ns: int | None,
               region: tuple[int, int], boot_region: tuple[int, int], run_ns: int, expected_uart: str | None,
               predicted: bytes | None, download_error: str | None, reads: BootReads | None = None) -> Trial:
    """What a cut left (the supply already off): flash against the prediction (``predicted``:
    the reference's operations before a between cut), then the next boot."""
    changed = None
    cut_entries = [e for e in m.flash.journal.entries if e.kind == fj.POWER_CUT]
    if cut_entries and op is not None:
        changed = cut_entries[-1].detail.get("changed_bytes")
    prediction_ok = None
    if predicted is not None and download_error is None:
        prediction_ok = bytes(m.flash.storage) == predicted
    digest = _flash_digest(m)
    obs = observe_boot(m, region, boot_region, run_ns, plan.after, reads)
    outcome = classify(obs, expected_uart)
    return Trial(point, outcome, op, obs, cut_time_ns, changed, digest, prediction_ok,
                 download_error=download_error)


def _varying_ranges(ops: Sequence[FlashOp], flash_size: int) -> list[tuple[int, int]]:
    """Offsets of main flash that some operation of the download touches: the only bytes in
    which the flash left by one cut can differ from another's."""
    ranges = []
    for op in ops:
        if op.kind == fj.MASS_ERASE:
            ranges.append((0, flash_size))
        elif op.area == "main":
            ranges.append((op.offset, op.offset + max(op.length, len(op.new), len(op.old))))
    return merge_ranges(ranges)


@dataclass
class _Child:
    pid: int
    path: str
    point: CutPoint
    flash: tuple[bytes, bytes] | None  # the cut's flash as the parent previewed it: (main, option bytes)


class _Snapshots:
    """Every cut from one download: at each cut instant the process forks; the child is the
    board at that instant (CPU, memory, models, host session: the whole machine state), cuts
    the supply, boots and reports its :class:`Trial`; the parent carries on with the download.
    At most ``jobs`` children run at once.  The result
    is the same as replaying the download to each cut, without the replays.

    With ``reuse_boots`` the parent first works out the flash the cut leaves without cutting
    (``FlashInterface.power_cut_preview``) and looks it up in a :class:`BootMemo`: a cut whose
    flash holds the same bytes where an earlier boot read the varying flash boots exactly
    like it (see :mod:`emulator.bootflow.boot_memo`), so it takes that boot's observation and
    no child is forked.  Each child that does boot checks the parent's preview (the flash
    digest) and reports the flash bytes its boot read."""

    def __init__(self, plan: _Plan, region: tuple[int, int], boot_region: tuple[int, int], run_ns: int,
                 expected_uart: str | None, initial: bytes, ops: Sequence[FlashOp], jobs: int,
                 on_trial: Callable[[Trial], None], reuse_boots: bool = True) -> None:
        self.args = (region, boot_region, run_ns, expected_uart)
        self.plan = plan
        self.ops = ops
        self.jobs = max(1, jobs)
        self.on_trial = on_trial
        self.running: list[_Child] = []
        self.dir = tempfile.mkdtemp(prefix="powercut-")
        self.m: Machine | None = None
        self.tap: _Tap | None = None
        self.memo = BootMemo() if reuse_boots else None
        self.varying: list[tuple[int, int]] = []
        self.booted = 0
        self.forks = 0
        # The reference's flash before operation ``_predicted_upto``, kept as the cuts advance.
        self._predicted = bytearray(initial)
        self._predicted_upto = 0
        self._ops_checked = 0  # the snapshot download's operations found equal to the reference's
        self._diverged = False

    def run(self, points: Sequence[CutPoint]) -> list[CutPoint]:
        """Fork at each of ``points``; returns those the download never reached."""
        board = _new_board(self.plan)
        self.m = board.machine
        self.varying = _varying_ranges(self.ops, self.m.chip.flash_size)
        tap = self.tap = _Tap(self.m, points, self._cut)
        try:
            _download(board, self.plan)
        finally:
            tap.detach()
            while self.running:
                self._reap_one()
            shutil.rmtree(self.dir, ignore_errors=True)
        return list(tap.pending)

    def _predicted_before(self, k: int) -> bytes:
        """The reference's flash with its operations 0..k-1 done (cuts come in download order)."""
        for op in self.ops[self._predicted_upto:k]:
            if op.area == "main" and op.new:
                self._predicted[op.offset:op.offset + len(op.new)] = op.new
        self._predicted_upto = max(self._predicted_upto, k)
        return bytes(self._predicted)

    def _same_as_reference(self) -> bool:
        """Whether the snapshot download's operations so far are the reference's: the varying
        bytes (and so the memo's key) are only known for the reference's download."""
        assert self.tap is not None
        seen = self.tap.ops
        for i in range(self._ops_checked, len(seen)):
            a = seen[i]
            b = self.ops[i] if i < len(self.ops) else None
            if b is None or (a.kind, a.area, a.offset, a.length) != (b.kind, b.area, b.offset, b.length):
                self._diverged = True
                break
        self._ops_checked = len(seen)
        return not self._diverged

    def _cut(self, point: CutPoint, op: FlashOp | None) -> None:
        m = self.m
        assert m is not None
        started = time.perf_counter()
        predicted = self._predicted_before(point.index) if point.mode == BETWEEN else None
        preview = None
        if self.memo is not None and self._same_as_reference():
            preview = m.flash.power_cut_preview()
        if preview is not None and self._reuse(point, op, preview, predicted, started):
            return
        while len(self.running) >= self.jobs:
            # Make room; the boot reaped may be the one this cut would run.
            self._reap_one()
            if preview is not None and self._reuse(point, op, preview, predicted, started):
                return
        self._fork(point, op, predicted, None if preview is None else preview[:2])

    def _reuse(self, point: CutPoint, op: FlashOp | None, preview: tuple[bytes, bytes, int | None],
               predicted: bytes | None, started: float) -> bool:
        """Take a kept boot for this cut, if one applies to the flash it leaves."""
        assert self.memo is not None and self.m is not None
        main, options, changed = preview
        hit = self.memo.lookup(main, options)
        if hit is None:
            return False
        (obs, outcome), label = hit
        trial = Trial(point, outcome, op, obs, self.m.now_ns, changed if op is not None else None,
                      _digest(main, options), None if predicted is None else main == predicted,
                      boot_same_as=label)
        trial.wall_s = time.perf_counter() - started
        self.on_trial(trial)
        return True

    def _fork(self, point: CutPoint, op: FlashOp | None, predicted: bytes | None,
              flash: tuple[bytes, bytes] | None) -> None:
        while len(self.running) >= self.jobs:
            self._reap_one()
        self.forks += 1
        path = os.path.join(self.dir, f"{self.forks}-{point.index}-{point.mode}.pickle")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: this instant of the download is its whole world
            code = 0
            try:
                started = time.perf_counter()
                m = self.m
                assert m is not None
                m.power_cut()
                reads = BootReads(m, self.varying) if flash is not None else None
                trial = _after_cut(m, self.plan, point, op, m.now_ns, *self.args, predicted=predicted,
                                   download_error=None, reads=reads)
                trial.wall_s = time.perf_counter() - started
                result: Any = (trial, None if reads is None else reads.runs)
            except BaseException as e:  # noqa: BLE001 - reported by the parent, never unwound here
                result, code = f"{type(e).__name__}: {e}", 1
            try:
                with open(path, "wb") as f:
                    pickle.dump(result, f)
            finally:
                os._exit(code)
        self.running.append(_Child(pid, path, point, flash))

    def _reap_one(self) -> None:
        """Wait for the oldest child and take its trial.  Always the oldest, never whichever
        ends first: what the memo holds at each cut, and so which cuts boot, is then the same
        on every run, and so is the report."""
        child = self.running[0]
        os.waitpid(child.pid, 0)
        self.running.remove(child)
        try:
            with open(child.path, "rb") as f:
                result = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            result = f"the trial's process left no result ({e})"
        if isinstance(result, str):
            raise RuntimeError(f"power-cut trial {child.point.label} failed: {result}")
        trial, runs = result
        self.booted += 1
        if child.flash is not None and self.memo is not None:
            main, options = child.flash
            if trial.flash_digest != _digest(main, options):
                raise RuntimeError(f"power-cut trial {child.point.label}: the flash the cut left differs from "
                                   "the flash model's preview of it")
            if runs is not None:
                self.memo.add(runs, main, options, (trial.observation, trial.outcome), trial.point.label)
        self.on_trial(trial)


# -- presentation ---------------------------------------------------------------------------------

def render(reports: Sequence[SweepReport], console: Any = None, *, all_rows: bool = False) -> None:
    """A rich table per report: one row per distinct outcome run (rows equal to the
    previous one in outcome and evidence are folded unless ``all_rows``)."""
    from rich.table import Table

    from hostside.console import console as stderr_console

    if console is None:
        console = stderr_console()  # plain unwrapped lines when stderr is not a terminal
    style = {"dfu": "green", "app_ok": "green", "broken_app": "bold red", "bricked": "bold red"}
    for rep in reports:
        t = Table(title=f"power-cut sweep: {rep.boot_image} + {rep.app_file} ({rep.erase_order}, "
                        f"{len(rep.ops)} flash operations, {len(rep.trials)} cuts)")
        for col in ("cut", "operation", "outcome", "evidence"):
            t.add_column(col, overflow="fold")
        prev: tuple[str, str] | None = None
        folded = 0
        for tr in rep.trials:
            ev = _evidence(tr)
            sig = (tr.outcome, _signature(tr))
            if not all_rows and sig == prev:
                folded += 1
                continue
            if folded:
                t.add_row("", f"… {folded} more with the same outcome", "", "")
                folded = 0
            prev = sig
            t.add_row(tr.point.label, _op_text(tr.op), f"[{style[tr.outcome]}]{tr.outcome}[/]", ev)
        if folded:
            t.add_row("", f"… {folded} more with the same outcome", "", "")
        console.print(t)
        counts = ", ".join(f"{k} {v}" for k, v in rep.counts().items())
        verdict = ("[bold red]jumps into a half-written image[/]" if rep.jumps_into_broken_image
                   else "[green]never jumps into a half-written image[/]")
        console.print(f"{counts} — {verdict}")
        console.print(cost_line(rep))
        for p in rep.problems:
            console.print(f"[yellow]problem:[/] {p}")


def cost_line(rep: SweepReport) -> str:
    """How the cuts were covered and the sweep's wall time, for the summary."""
    same_flash = sum(t.same_as is not None for t in rep.trials)
    return (f"{len(rep.trials)} cuts: {rep.booted} booted, {rep.boots_reused} reused an earlier boot that read "
            f"the same flash bytes, {same_flash} left the same flash as an earlier cut; {rep.wall_s:.1f} s")


def _op_text(op: FlashOp | None) -> str:
    if op is None:
        return "-"
    addr = "-" if op.address is None else f"0x{op.address:08X}"
    return f"{op.kind} {addr}"


def _signature(tr: Trial) -> str:
    o = tr.observation
    if o is None:
        return ""
    return f"{o.jump_address}|{o.stop_kind}|{o.uart_after_jump}|{o.usb_attached}"


def _evidence(tr: Trial) -> str:
    o = tr.observation
    if tr.download_error:
        return f"cut not reached: {tr.download_error}"
    if o is None:
        return ""
    parts = []
    if o.jumped:
        parts.append(f"jump 0x{o.jump_address:08X} MSP 0x{(o.jump_msp or 0):08X}")
        parts.append(f"{o.stop_kind}: {o.stop_detail}" if o.stop_detail else o.stop_kind)
        text = o.uart_after_jump.strip().replace("\r\n", " | ")
        parts.append(f"uart {text[:60]!r}" if text else "no uart output")
    else:
        parts.append("USB attached" if o.usb_attached else "no USB device")
        parts.append(o.stop_kind)
    if tr.same_as:
        parts.append(f"same flash as {tr.same_as}")
    return "; ".join(parts)
