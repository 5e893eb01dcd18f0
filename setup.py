"""The C half of the CPU engine (``emulator.core._cengine``) is built here by cffi.

It is optional: without a C compiler the extension is skipped, ``pip install``
still succeeds, and the pure-Python engine runs with the same results
(``emulator/core/engine.py``).  Everything else is declared in pyproject.toml.
"""

from setuptools import setup

setup(cffi_modules=["emulator/core/_cengine_build.py:ffibuilder"])
