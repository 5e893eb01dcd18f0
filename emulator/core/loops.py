"""Fast-forwarding loops whose iterations are provably identical.

Firmware waiting for something (a flag, the USB host, the next tick) spins in a
loop.  When the whole machine is in the same state at the same place in the
loop twice, with nothing in between that could make the future differ, every
further pass is the same pass again until the next timed event: the machine
then skips whole passes, advancing time and the instruction count exactly as if
they had run.

*The same state* is everything the loop's future can depend on:

* the CPU: R0-R12, MSP, PSP, LR, PC, xPSR, PRIMASK, BASEPRI, FAULTMASK, CONTROL;
* all of SRAM;
* every peripheral model the loop read or wrote since the earlier visit, in
  full (all of its attributes, recursively), and the NVIC;
* counters of anything else that could have happened in between: timers
  scheduled, cancelled or fired, exceptions taken, events logged, unmodelled
  accesses, flash writes, resets, and queries of the time by a model (a model
  that computes a value from the time, e.g. SysTick VAL or DWT CYCCNT, makes
  the pass depend on the time, so no skip).

So a loop that rewrites a register with the value it holds, or masks and
unmasks an interrupt around its work (NVIC ICER then ISER), is skipped; a loop
that counts in SRAM, or reads a timer, is not.

Comparing all that costs tens of microseconds, so it is done only when the
cheap part says it is worth it: every MMIO access the CPU makes is recorded as
(block, address, direction, value), a pass is the run of accesses between two
visits of the first one recorded (the anchor), and once the sequence of passes
repeats (with period 1 to 4 passes) the machine ends the slice at the next block
boundary and takes a snapshot.  A snapshot equal to one taken earlier at the
same PC proves the period.  Loops whose state keeps changing are looked at less
and less often.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import functools
import marshal
import operator
import types
from collections import deque
from typing import Any

from unicorn.unicorn_py3.unicorn import uclib

from firmware_models.nvic import ExceptionController
from firmware_models.regs import Peripheral

MAX_TRAIL = 3 * 64  # 64 accesses a pass at most (three list items each)
MAX_PERIOD = 4  # passes
MAX_SNAPSHOTS = 4
MAX_MUTE = 1 << 14  # accesses
BIG_BUFFER = 1 << 16  # larger byte arrays (the flash array) are tracked by counters instead
VERIFYING = -3  # _anchor_key while a resumed loop is being verified (accesses are only collected)
_SKIP = object()


_ATOMS = (int, bool, float, str, bytes, type(None))
_ATOM_TYPES = frozenset(_ATOMS)
_FLAT_TYPES = _ATOM_TYPES | {tuple}  # tuples of atoms are values too
# Attributes of a model that never change after construction (the register tables) or are not
# state (the port): left out of the comparison.
# The NVIC's listeners and a model's controller are references to other parts (compared on
# their own or not state), as plain() would find; named here so marshal takes the rest at once.
_STATIC_ATTRS = frozenset({"_by_offset", "_by_name", "_offsets", "port", "listeners", "controller"})
_KIND: dict[type, str] = {}


def _kind(t: type) -> str:
    kind = _KIND.get(t)
    if kind is None:
        if issubclass(t, _ATOMS) or issubclass(t, enum.Enum):
            kind = "atom"
        elif issubclass(t, bytearray | memoryview):
            kind = "buffer"
        elif issubclass(t, list | tuple | deque):
            kind = "seq"
        elif issubclass(t, dict):
            kind = "dict"
        elif issubclass(t, set | frozenset):
            kind = "set"
        elif (issubclass(t, Peripheral | ExceptionController | types.FunctionType | types.MethodType
                         | types.BuiltinFunctionType | functools.partial)
              or t.__module__.startswith(("emulator.core", "unicorn", "firmware_models.regs",
                                          "firmware_models.flash_journal"))):
            # Other models (compared on their own), functions, the machine's parts, and the flash
            # journal: append-only, and every entry comes with a port event or a timer, which
            # the counters see.
            kind = "skip"
        elif dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            kind = "frozen"  # an immutable value object: the same one or another
        elif hasattr(t, "__slots__") and not hasattr(t, "__dict__"):
            kind = "slots"
        else:
            kind = "object"
        _KIND[t] = kind
    return kind


def plain(value: Any, depth: int = 0) -> Any:
    """A comparable copy of a model's state: plain data kept, references to other parts skipped."""
    kind = _kind(type(value))
    if kind == "atom":
        return value
    if kind == "seq":
        items = tuple(value)
        kinds = set(map(type, items))
        if kinds <= _ATOM_TYPES or kinds <= _FLAT_TYPES and all(set(map(type, x)) <= _ATOM_TYPES
                                                                for x in items if type(x) is tuple):
            return items
        return tuple([plain(v, depth + 1) for v in items]) if depth < 5 else _SKIP
    if kind == "dict":
        if set(map(type, value.values())) <= _ATOM_TYPES:
            return tuple(value.items())
        return tuple([(k, plain(v, depth + 1)) for k, v in value.items()]) if depth < 5 else _SKIP
    if kind == "buffer":
        return bytes(value) if len(value) <= BIG_BUFFER else _SKIP
    if kind == "set":
        return frozenset(value)
    if kind == "frozen":
        return ("frozen", id(value))
    if kind == "skip" or depth >= 5 or callable(value):
        return _SKIP
    if kind == "slots":
        return tuple([plain(getattr(value, a, None), depth + 1) for a in type(value).__slots__])
    return tuple([(k, plain(v, depth + 1)) for k, v in vars(value).items()])


def model_state(model: Any, plans: dict[int, tuple] | None = None) -> tuple:
    """The state of one model (the NVIC controller is compared on its own, not inside others).

    With ``plans`` (kept per machine: ids of its models stay theirs) the attributes that are
    plain data all the way down (ints, lists of bools, register dicts...) go through one
    ``marshal.dumps`` call, at C speed; the others through :func:`plain`.  An attribute that
    stops being plain data (a timer handle replacing None) makes the plan be learnt again.
    """
    if type(model) is ExceptionController:
        return model.loop_state()
    attrs = vars(model)
    if plans is None:
        return tuple([(k, plain(v, 1)) for k, v in attrs.items() if k not in _STATIC_ATTRS])
    plan = plans.get(id(model))
    if plan is not None and len(attrs) == plan[2]:
        fast_keys, slow_keys, _, gather = plan
        try:
            fast = marshal.dumps(gather(attrs))
        except (ValueError, KeyError):
            plan = None
    else:
        plan = None
    if plan is None:
        fast_list, slow_list = [], []
        for k, v in attrs.items():
            if k in _STATIC_ATTRS:
                continue
            if isinstance(v, bytes | bytearray | memoryview) and len(v) > BIG_BUFFER:
                slow_list.append(k)  # the flash array: its changes are counted (flash_writes)
                continue
            try:
                marshal.dumps(v)
                fast_list.append(k)
            except ValueError:
                slow_list.append(k)
        fast_keys, slow_keys = tuple(fast_list), tuple(slow_list)
        # The fast attributes' values as one tuple, gathered at C speed.
        gather = operator.itemgetter(*fast_keys) if len(fast_keys) > 1 else (
            lambda a, keys=fast_keys: tuple([a[k] for k in keys]))
        plans[id(model)] = (fast_keys, slow_keys, len(attrs), gather)
        fast = marshal.dumps(gather(attrs))
    if not slow_keys:
        return (fast_keys, fast, ())
    return (fast_keys, fast, tuple([(k, plain(attrs[k], 1)) for k in slow_keys]))


class LoopDetector:
    def __init__(self, machine: Any) -> None:  # emulator.core.machine.Machine (which imports this module)
        self.m = machine
        chip = machine.chip
        self._sram = (chip.sram_base, chip.sram_size, ctypes.create_string_buffer(chip.sram_size))
        self.enabled = True  # False: never skip (tests compare runs with and without skipping)
        self.want_check = False
        self._model_of: dict[int, Any] = {}
        self._plans: dict[int, tuple] = {}
        self.checks = 0
        self.skipped_passes = 0
        self.verified = 0  # periods proven by a verify (resume after an interrupt) instead of a check
        self.unverified = 0  # verifies that failed (the loop is then found again by checks)
        # The last period proven and the models its snapshots compared: after an interrupt
        # returns into the loop, one period is run and the states at both ends are compared
        # (begin_verify/end_verify) instead of finding the loop again pass by pass.
        self._candidate: tuple[int, dict[int, Any]] | None = None
        self.armed = False  # an interrupt hook ran: the next slice may verify the candidate
        self._verify_keys: set[int] = set()
        self._last_models: dict[int, Any] = {}  # the models the last snapshot compared
        # The candidate's models' MMIO keys seen so far: a verify whose accesses stay within
        # them compared the right models without looking each key up.
        self._candidate_keys: set[int] = set()
        self._verify_split: tuple | None = None  # _verify_state's view of the candidate's models
        self._sram_save, self._sram_same = machine.regs.memory_copy(chip.sram_base, chip.sram_size)
        self.reset()

    # -- the cheap part: on every MMIO access -------------------------------------------------
    def reset(self) -> None:
        self._anchor_block = -1
        self._anchor_key = -1
        self._trail: list[int] = []
        self._passes: deque[tuple[int, ...]] = deque(maxlen=2 * MAX_PERIOD)
        self._touched: set[int] = set()  # keys (address * 2 + write) accessed since the oldest snapshot
        self._snapshots: list[tuple[int, tuple]] = []  # (instructions, state)
        self._counters: tuple = ()
        self._misses = 0  # looks in a row that found no period
        self._aperiodic = 0  # passes in a row that did not repeat
        self._phase = 0  # periodic passes to let go by until the same phase comes round
        self._last_anchor = (-1, -1)
        self.mute = 0  # MMIO accesses to let go by unrecorded (backing off)

    def access(self, block: int, key: int, value: int) -> None:
        """``key`` is the address times two, plus one for a write.  (The machine's MMIO
        callbacks inline the first branch.)"""
        if self._anchor_key == VERIFYING:
            self._verify_keys.add(key)
            self._trail.clear()
            return
        if key != self._anchor_key or block != self._anchor_block:
            trail = self._trail
            trail += (block, key, value)
            if len(trail) > MAX_TRAIL or self._anchor_key < 0:
                self._restart(block, key, value)
            return
        done = tuple(self._trail)
        self._trail = [block, key, value]
        passes = self._passes
        if passes and done == passes[-1]:
            passes.append(done)  # the same pass again (its accesses are already in _touched)
            period = 1
        else:
            passes.append(done)
            self._touched.update(done[1::3])
            period = self._period(passes)
            if not period:
                self._aperiodic += 1
                if self._aperiodic > 2 * MAX_PERIOD:  # passes that never repeat: back off
                    self._aperiodic = 0
                    self._failed()
                return
        self._aperiodic = 0
        if self.want_check or not self.enabled:
            return
        if self._phase:  # look once every period, always at the same phase of it
            self._phase -= 1
            return
        self._phase = period - 1
        counters = self.counters()
        if counters != self._counters:
            # Something happened since the last look (an event, an interrupt, a byte sent):
            # no snapshot taken before can match any more, the counters only grow.
            self._counters = counters
            self._snapshots.clear()
            self._touched = {key for p in self._passes for key in p[1::3]}
            if self._misses:
                # Note the counters and look at the next periodic pass, if they stay put until
                # then (a loop that programs flash or sends a byte every pass never gets that
                # far).  A loop whose last look found the period is looked at at once.
                self._failed()
                return
        self.want_check = True
        self.m._request_stop()  # the check runs at the next block boundary

    @staticmethod
    def _period(passes: deque[tuple[int, ...]]) -> int:
        """p when the last 2p passes are one run of p passes twice (p in 2..MAX_PERIOD), else 0."""
        n = len(passes)
        for p in range(2, MAX_PERIOD + 1):
            if 2 * p > n:
                return 0
            if all(passes[-1 - i] == passes[-1 - p - i] for i in range(p)):
                return p
        return 0

    def _restart(self, block: int, key: int, value: int) -> None:
        if (block, key) != self._last_anchor:
            self._misses = 0  # another loop
        self._last_anchor = (block, key)
        self._anchor_block, self._anchor_key = block, key
        self._trail = [block, key, value]
        self._passes.clear()
        self._phase = 0

    def forget_passes(self) -> None:
        """Start the pass record afresh (after a skip: the next event comes within a pass)."""
        self._anchor_block = self._anchor_key = -1
        self._trail = []
        self._passes.clear()
        self._phase = 0

    # -- the full comparison, at a block boundary ---------------------------------------------
    def counters(self) -> tuple:
        """Everything else that could have happened: each only ever grows."""
        m = self.m
        # m.activity: exceptions taken, unmodelled accesses, guest errors, reset requests, UART
        # bytes out (the machine counts them as they happen).
        return (m.scheduler.activity, len(m.events), m.time_queries, m.flash_writes, m.resets,
                m.activity, m.cpu.sleeping, m.cpu.locked_up)

    def _models(self, keys: set[int], models: dict[int, Any]) -> dict[int, Any]:
        """``models`` plus the models behind the MMIO ``keys`` (by id)."""
        m, where = self.m, self._model_of
        for key in keys:
            model = where.get(key)
            if model is None:
                model = where[key] = m.model_at(key >> 1) or m.nvic
            models[id(model)] = model
        return models

    def snapshot(self, counters: tuple, models: dict[int, Any] | None = None) -> tuple:
        m = self.m
        base, size, buf = self._sram
        status = uclib.uc_mem_read(m.uc._uch, base, buf, size)
        if status != 0:
            raise RuntimeError(f"uc_mem_read of SRAM failed with error {status}")
        plans = self._plans
        if models is not None:  # a verify: the same dict at both ends, so the same order
            return (m.regs.snapshot_regs(), counters, buf.raw,
                    tuple([model_state(x, plans) for x in models.values()]))
        models = self._models(self._touched.union(self._trail[1::3]), {id(m.nvic): m.nvic})
        self._last_models = models
        return (m.regs.snapshot_regs(), counters, buf.raw,
                tuple(sorted((type(x).__name__, getattr(x, "name", ""), model_state(x, plans))
                             for x in models.values())))

    def check(self) -> int:
        """Compare the state now with earlier snapshots; the period in instructions, or 0."""
        self.want_check = False
        self.checks += 1
        counters = self.counters()
        if counters != self._counters:  # changed in the rest of the block: look again later
            self._counters = counters
            self._snapshots.clear()
            self._failed()
            return 0
        state = self.snapshot(counters)
        now = self.m.instructions
        for count, earlier in self._snapshots:
            if earlier == state and now > count:
                self._misses = 0
                self._candidate = (now - count, self._last_models)
                self._candidate_keys = set()
                return now - count
        # The loop changed something of its own (a counter, a buffer): look again later.
        self._snapshots.append((now, state))
        if len(self._snapshots) > MAX_SNAPSHOTS:
            del self._snapshots[0]
        self._failed()
        return 0

    def _failed(self) -> None:
        """Back off exponentially while the looks at this loop keep failing (two misses are the
        normal price of a loop that idles between events): stop recording for a while."""
        self._misses += 1
        if self._misses > 2:
            self.mute = min(MAX_MUTE, 64 << (self._misses - 3))
            self._anchor_key = -1  # look for the loop afresh afterwards

    # -- a loop resumed after an interrupt: one period, two snapshots ----------------------------
    def begin_verify(self, room: int) -> tuple | None:
        """At a block boundary after an interrupt hook ran: if a period was proven before and
        ``room`` (instructions to the next event) holds more than one, the snapshot now and
        the period to run; the caller runs exactly that slice and calls :meth:`end_verify`.

        Equal states at both ends with nothing else happening in between prove the period
        just as :meth:`check` does (the same snapshot; the models compared are those of the
        earlier proof plus, checked at the end, every model accessed in between)."""
        self.armed = False
        candidate = self._candidate
        if candidate is None or not self.enabled or self.want_check or room <= candidate[0]:
            return None
        period, models = candidate
        counters = self.counters()
        state = self._verify_state(models)
        self._sram_save()
        self.forget_passes()
        self._anchor_key = self._anchor_block = VERIFYING
        self._verify_keys = set()
        self.mute = 0
        return period, self.m.instructions, (counters, state)

    def end_verify(self, verify: tuple, complete: bool) -> int:
        """The period proven, or 0 (then the candidate is dropped: found again by checks)."""
        period, start, (counters, before) = verify
        keys = self._verify_keys
        self.forget_passes()
        m = self.m
        if complete and m.instructions - start == period and self.counters() == counters:
            models = self._candidate[1] if self._candidate is not None else {}
            known = self._candidate_keys
            within = keys <= known
            if not within and self._models(keys, dict(models)).keys() == models.keys():
                known |= keys  # all behind the proof's models
                within = True
            if within and self._verify_state(models) == before and self._sram_same():
                self.verified += 1
                return period
        self._candidate = None
        self.unverified += 1
        return 0

    def _verify_state(self, models: dict[int, Any]) -> tuple:
        """What :meth:`snapshot` compares but SRAM (compared in C by ``_sram_same``), for the
        same ``models`` at both ends of a verify: the models' plain-data attributes go through
        a single ``marshal.dumps`` (equal bytes load as equal values).
        An attribute that is not plain data any more falls back to :func:`model_state`,
        tagged apart: a fallback at one end only is a difference, never a false match."""
        plans = self._plans
        split = self._verify_split
        if split is None or split[0] is not models:
            # The proof's models, once per candidate: the exception controller apart.
            split = self._verify_split = (
                models, tuple([x for x in models.values() if type(x) is ExceptionController]),
                tuple([(id(x), vars(x)) for x in models.values() if type(x) is not ExceptionController]))
        fast: list[Any] = []
        slow: list[Any] = [self.m.regs.snapshot_regs_key()]
        for x in split[1]:
            slow.append(x.loop_state())  # copies already, compared at C speed as they are
        try:
            for key, attrs in split[2]:
                plan = plans.get(key)
                if plan is None or len(attrs) != plan[2]:
                    break
                fast.append(plan[3](attrs))
                if plan[1]:
                    slow.append(tuple([plain(attrs[k], 1) for k in plan[1]]))
            else:
                # Version 2: no back-references, so the bytes depend on the values alone (not on
                # which objects happen to be shared), and it is the quickest to write.
                return ("fast", marshal.dumps(fast, 2), slow)
        except (ValueError, KeyError):
            pass
        return ("slow", slow[0], tuple([model_state(x, plans) for x in models.values()]))
