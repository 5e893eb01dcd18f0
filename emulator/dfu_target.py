"""Where ``open_emulated`` lived before the layered layout; scripts written against it keep working.

New code imports :mod:`emulator.usb.target` (docs/ARCHITECTURE.md).
"""

from emulator.usb.target import EmulatedTarget, attach, open_emulated

__all__ = ["EmulatedTarget", "attach", "open_emulated"]
