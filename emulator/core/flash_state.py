"""Whole-board non-volatile state for ``--flash FILE``.

One file keeps what survives a power cycle on a real board: the main flash
array, the 16 option bytes, the backup registers (a list of 16-bit values
supplied by the BKP model; they survive on a board with VBAT) and the chip
they belong to.

File format, version 1 (all integers little-endian)::

    magic      8 bytes   b"STM32NV\\x00"
    hdr_len    4 bytes   length of the header
    header     hdr_len   UTF-8 JSON object:
                           {"version": 1, "chip": "STM32F103RC",
                            "flash_size": 262144, "option_bytes_size": 16,
                            "backup_registers": [0, 0, ...]}
    flash      flash_size bytes
    options    option_bytes_size bytes
    crc32      4 bytes   CRC-32 (zlib) of every byte before it

The CRC covers the header too, so any corrupt or truncated file is refused
with a :class:`FlashStateError` whose message is one line.  A missing file is
a fresh chip: main flash erased (all 0xFF), factory option bytes, backup
registers zero.  Files are written to a temporary name and renamed, so a
crash while saving never leaves a half-written state behind.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from firmware_models.flash import FACTORY_OPTION_BYTES, OPTION_BYTES_SIZE

MAGIC = b"STM32NV\x00"
VERSION = 1
_MAX_HEADER = 1 << 20  # a header is a few hundred bytes; refuse absurd lengths early


class FlashStateError(Exception):
    """The state file cannot be used (corrupt, truncated, other chip, bad version)."""


@dataclass
class BoardNvState:
    chip: str
    flash: bytes
    option_bytes: bytes = FACTORY_OPTION_BYTES
    backup_registers: list[int] = field(default_factory=list)

    @classmethod
    def fresh(cls, chip: str, flash_size: int, backup_register_count: int = 0) -> BoardNvState:
        """A new chip: erased flash, factory option bytes, backup registers zero."""
        return cls(chip, b"\xff" * flash_size, FACTORY_OPTION_BYTES, [0] * backup_register_count)


def encode_state(state: BoardNvState) -> bytes:
    if len(state.option_bytes) != OPTION_BYTES_SIZE:
        raise ValueError(f"option bytes must be {OPTION_BYTES_SIZE} bytes, got {len(state.option_bytes)}")
    for value in state.backup_registers:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"backup register value {value} is not a 16-bit value")
    header = json.dumps({
        "version": VERSION,
        "chip": state.chip,
        "flash_size": len(state.flash),
        "option_bytes_size": OPTION_BYTES_SIZE,
        "backup_registers": list(state.backup_registers),
    }, separators=(",", ":")).encode()
    body = MAGIC + struct.pack("<I", len(header)) + header + bytes(state.flash) + bytes(state.option_bytes)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def decode_state(data: bytes, *, source: str = "state file") -> BoardNvState:
    if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
        raise FlashStateError(f"{source}: not a flash state file (bad magic or too short)")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    (hdr_len,) = struct.unpack_from("<I", data, len(MAGIC))
    if hdr_len > _MAX_HEADER or len(MAGIC) + 4 + hdr_len > len(body):
        raise FlashStateError(f"{source}: truncated or corrupt (header length {hdr_len})")
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise FlashStateError(f"{source}: CRC mismatch, the file is corrupt or truncated")
    start = len(MAGIC) + 4
    try:
        header = json.loads(body[start:start + hdr_len])
        version = header["version"]
        chip = header["chip"]
        flash_size = header["flash_size"]
        ob_size = header["option_bytes_size"]
        backup = header["backup_registers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FlashStateError(f"{source}: unreadable header ({exc})") from None
    if version != VERSION:
        raise FlashStateError(f"{source}: format version {version}, this emulator reads version {VERSION}")
    if (not isinstance(chip, str) or not isinstance(flash_size, int) or ob_size != OPTION_BYTES_SIZE
            or not isinstance(backup, list) or not all(isinstance(v, int) for v in backup)):
        raise FlashStateError(f"{source}: malformed header")
    payload = body[start + hdr_len:]
    if len(payload) != flash_size + ob_size:
        raise FlashStateError(f"{source}: holds {len(payload)} bytes of memory, header says "
                              f"{flash_size + ob_size}")
    return BoardNvState(chip, bytes(payload[:flash_size]), bytes(payload[flash_size:]), list(backup))


def save_state(path: str | os.PathLike[str], state: BoardNvState) -> None:
    """Write ``state`` atomically (temporary file in the same directory, then rename)."""
    target = Path(path)
    data = encode_state(state)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | os.PathLike[str], *, chip: str, flash_size: int,
               backup_register_count: int = 0) -> BoardNvState:
    """Read the state for ``chip``; a missing file gives a fresh chip.

    Raises :class:`FlashStateError` for a corrupt or truncated file, or one
    saved for another chip or flash size.
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return BoardNvState.fresh(chip, flash_size, backup_register_count)
    except OSError as exc:
        raise FlashStateError(f"{target}: cannot read ({exc.strerror})") from None
    state = decode_state(data, source=str(target))
    if state.chip != chip:
        raise FlashStateError(f"{target}: saved for {state.chip}, this board is {chip}")
    if len(state.flash) != flash_size:
        raise FlashStateError(f"{target}: holds {len(state.flash)} bytes of flash, {chip} has {flash_size}")
    if backup_register_count and not any(state.backup_registers[backup_register_count:]):
        # Files written before the BKP model followed the chip's density hold 42 registers for a
        # 10-register part; the ones the part lacks could never have been written, so they are 0.
        state.backup_registers = state.backup_registers[:backup_register_count]
    if backup_register_count and len(state.backup_registers) != backup_register_count:
        raise FlashStateError(f"{target}: holds {len(state.backup_registers)} backup registers, "
                              f"{chip} has {backup_register_count}")
    return state
