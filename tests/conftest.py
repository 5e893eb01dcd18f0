"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import settings

from emulator.usb.device_server import APT_LINE, bridge_python

# No wall-clock limits in tests: hypothesis's per-example deadline is one, and it fails
# examples at random on a loaded CI machine.
settings.register_profile("bootsim", deadline=None)
settings.load_profile("bootsim")


@pytest.fixture(scope="session")
def dfu_util_tools() -> None:
    """Debian's dfu-util and umockdev's GI bindings: missing tools fail with the apt line (CI installs them)."""
    missing = [name for name in ("dfu-util",) if shutil.which(name) is None]
    probe = subprocess.run([bridge_python(), "-c", "import gi; gi.require_version('UMockdev', '1.0'); "
                            "from gi.repository import UMockdev; UMockdev.IoctlData.update"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        missing.append("umockdev GI bindings (>= 0.17.14)")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {APT_LINE}", pytrace=False)
