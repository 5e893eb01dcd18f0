"""Golden event logs: the main boot-flow scenarios must record exactly the same
events (time, kind, code, data) as the committed logs.  Emulated time is
deterministic, so any difference is a behaviour change to look at.

Regenerate after an intended change with:  UPDATE_GOLDEN=1 python -m pytest tests/test_golden_events.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from emulator.bootflow.scenario import flash_and_boot

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "fixtures" / "images"
GOLDEN = Path(__file__).resolve().parent / "golden"

SCENARIOS = {
    "fixed_app_small": ("boot_fixed.elf", "app_small.elf"),
    "seed_bad_vtor": ("boot_seed.elf", "bad_vtor.elf"),
}


def event_log(boot: str, app: str) -> list[dict]:
    outcome = flash_and_boot(str(IMAGES / boot), str(IMAGES / app), run_ns=200_000_000)
    m = outcome.board.machine
    log = []
    for e in m.events:
        if e.kind in ("gpio",):
            continue  # blink toggles: counted by the GPIO model, not part of the boot story
        entry = e.as_dict()
        entry["pc"] = m.symbol(e.pc) if e.pc else None
        log.append(entry)
    return json.loads(json.dumps(log, default=str))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_event_log_matches_the_golden_log(name):
    log = event_log(*SCENARIOS[name])
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(log, indent=1) + "\n")
    golden = json.loads(path.read_text())
    assert log == golden
