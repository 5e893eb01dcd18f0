"""``python -m emulator conformance BOOT [APP]``: a conformance suite for anyone's DFU bootloader.

The suite is a set of pytest modules (``suite_*.py``) run in-process by :mod:`runner`, so
``-n N``, ``-k EXPR`` and ``--junitxml FILE`` are pytest's own options.  :mod:`target`
describes the bootloader under test and the options it needs (chip, boot triggers,
device selection, application address).  :mod:`plugin` hands that description to the
test modules as fixtures and reports progress and a summary table.
"""
