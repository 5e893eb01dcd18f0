"""Load the bootsim plugin when it is not installed (a source checkout without ``pip install``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if not manager.has_plugin("bootsim") and not manager.has_plugin("emulator.pytest_plugin"):
        manager.import_plugin("emulator.pytest_plugin")
