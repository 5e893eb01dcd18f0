"""Power cuts during a download: the next boot must never run a half-written image.

The power-cut sweep of ``python -m emulator flash --power-cut-sweep`` (its default cut
points unless ``--sweep-points`` says otherwise).  It runs one reference download,
cuts the supply just before and half-way through the bootloader's flash operations on
fresh boards, and powers on again with the after-download triggers.  A cut may leave
the board in DFU mode or running the complete application.  It must never jump into a
half-written image, and it must never leave a board that does neither.
"""

from __future__ import annotations

import pytest

from emulator.bootflow.powercut import SweepReport, Trial, parse_points, sweep
from emulator.conformance.plugin import Application
from emulator.conformance.target import ConformanceTarget
from emulator.core import progress


@pytest.fixture(scope="module")
def sweep_report(target: ConformanceTarget, application: Application) -> SweepReport:
    try:
        points = parse_points(target.sweep_points)
    except ValueError as e:
        pytest.fail(str(e))
    options = target.flow_options()
    options["app_address"] = application.address
    with progress.task("power-cut sweep: reference download", unit="cuts") as cuts:
        done: list[Trial] = []

        def cut_done(trial: Trial) -> None:
            done.append(trial)
            cuts.update(completed=len(done), description=f"power-cut sweep: {trial.point.label} {trial.outcome}")

        try:
            return sweep(target.boot, application.path, points=points, progress=cut_done, **options)
        except ValueError as e:
            pytest.fail(f"the sweep could not run: {e}")


def _cuts(report: SweepReport, outcome: str) -> str:
    cuts = [t for t in report.trials if t.outcome == outcome]
    first = cuts[0]
    obs = first.observation
    what = ""
    if obs is not None and obs.jumped:
        what = f": jumped to 0x{obs.jump_address:08X}, then {obs.stop_kind}"
    return (f"{len(cuts)} of {len(report.trials)} cuts, first {first.point.label}"
            + (f" ({first.op.kind} at 0x{first.op.address:08X})" if first.op and first.op.address is not None else "")
            + what)


def test_reference_download_for_the_sweep_boots_the_application(sweep_report: SweepReport) -> None:
    assert not sweep_report.problems, "; ".join(sweep_report.problems[:3])


def test_power_cut_during_the_download_never_boots_a_half_written_image(sweep_report: SweepReport) -> None:
    assert not sweep_report.jumps_into_broken_image, \
        f"a power cut leads to a jump into a half-written image (broken_app): {_cuts(sweep_report, 'broken_app')}"


def test_power_cut_during_the_download_never_bricks_the_board(sweep_report: SweepReport) -> None:
    bricked = any(t.outcome == "bricked" for t in sweep_report.trials)
    assert not bricked, f"a power cut leaves a board with no application and no DFU device (bricked): " \
                        f"{_cuts(sweep_report, 'bricked')}"
