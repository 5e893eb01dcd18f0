"""The README's "Gate your bootloader in CI" jobs: valid YAML, and every emulator command in them parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from emulator.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTION = README[README.index("## Gate your bootloader in CI"):]
BLOCKS = re.findall(r"```yaml\n(.*?)```", SECTION, re.S)


def commands() -> list[str]:
    """Each ``python -m emulator ...`` of the CI examples, folded lines joined, CI variables filled in."""
    found = []
    for block in BLOCKS:
        text = re.sub(r"\n\s+(?=--?[a-z])", " ", block)  # a folded command goes on with its options
        for match in re.finditer(r"python -m emulator ([^\n]*)", text):
            line = match.group(1).replace("${{ matrix.shard }}", "0").replace("$SHARD", "0")
            found.append(line.split(" > ")[0].split(" || ")[0])
    return found


def test_the_ci_section_has_a_github_and_a_gitlab_job():
    assert len(BLOCKS) == 2 and "jobs:" in BLOCKS[0] and "stages:" in BLOCKS[1]


@pytest.mark.parametrize("block", BLOCKS, ids=["github", "gitlab"])
def test_each_ci_example_is_valid_yaml(block):
    import yaml  # in the test extras: the examples are checked, never skipped

    assert isinstance(yaml.safe_load(block), dict)


@pytest.mark.parametrize("command", commands())
def test_each_emulator_command_in_the_ci_examples_parses(command):
    args = build_parser().parse_args(shlex.split(command))
    assert callable(args.func)


def test_the_ci_examples_upload_the_junit_file_and_the_pcap():
    for block in BLOCKS:
        assert "conformance.xml" in block and "enumeration.pcap" in block and "sweep-merge" in block
