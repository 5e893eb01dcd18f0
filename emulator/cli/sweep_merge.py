"""``python -m emulator sweep-merge A.json B.json …``: the shards of one power-cut sweep, as one sweep.

Each shard is the ``--json`` output of ``flash BOOT APP --power-cut-sweep --shard K/N``.
Exit 0 when no cut jumps into a half-written image or bricks the board, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emulator.bootflow.powercut import OUTCOMES, merge_shards
from emulator.cli.common import EXIT_CLEAN, EXIT_FAILED
from emulator.core.machine import EmulatorError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep-merge", help="merge the --json reports of a sharded power-cut sweep")
    p.add_argument("reports", nargs="+", metavar="SHARD.json", help="one report per shard, 0..N-1")
    p.add_argument("--json", action="store_true", help="print the merged report as JSON on stdout")
    p.set_defaults(func=cmd_sweep_merge)


def cmd_sweep_merge(args: argparse.Namespace) -> int:
    docs = []
    for path in args.reports:
        try:
            docs.append(json.loads(Path(path).read_text()))
        except OSError as e:
            raise EmulatorError(f"cannot read {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise EmulatorError(f"{path} is not a sweep report (JSON error at line {e.lineno})") from None
    try:
        merged = merge_shards(docs)
    except (ValueError, KeyError, TypeError) as e:
        raise EmulatorError(f"cannot merge: {e}") from None
    if args.json:
        print(json.dumps(merged, indent=2))
    else:
        counts = ", ".join(f"{merged['counts'][o]} {o}" for o in OUTCOMES)
        print(f"power-cut sweep {merged['boot_image']} + {merged['app_file']} ({merged['erase_order']}): "
              f"{len(merged['trials'])} cuts from {len(docs)} shards: {counts} ({merged.get('booted', 0)} booted, "
              f"{merged.get('boots_reused', 0)} reused an earlier boot)", file=sys.stderr)
        for problem in merged["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
        print("clean" if merged["clean"] else "NOT CLEAN: a cut jumps into a half-written image, bricks the "
              "board, or did not happen as planned", file=sys.stderr)
    return EXIT_CLEAN if merged["clean"] else EXIT_FAILED
