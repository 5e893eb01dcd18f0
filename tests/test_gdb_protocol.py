"""The GDB remote stub's protocol layer, packet by packet, against a fake target."""

from __future__ import annotations

import socket
import threading

import pytest

from emulator.gdb import rsp
from emulator.gdb.server import Connection, GdbStub, Stop, TargetError
from emulator.gdb.tdesc import REGISTERS, Region


class FakeTarget:
    def __init__(self) -> None:
        self.regs = list(range(len(REGISTERS)))
        self.mem = bytearray(0x100)
        self.points: set[tuple[int, int, int]] = set()
        self.flash: list[tuple[str, int, bytes | int]] = []
        self.commands: list[str] = []

    def registers(self) -> list[int]:
        return list(self.regs)

    def set_register(self, n: int, value: int) -> None:
        self.regs[n] = value

    def read_memory(self, address: int, length: int) -> bytes:
        if address + length > len(self.mem):
            raise TargetError(f"cannot read 0x{address:08X}")
        return bytes(self.mem[address : address + length])

    def write_memory(self, address: int, data: bytes) -> None:
        self.mem[address : address + len(data)] = data

    def memory_regions(self) -> list[Region]:
        return [Region("flash", 0x0800_0000, 0x40000, 0x800), Region("ram", 0x2000_0000, 0xC000)]

    def flash_erase(self, address: int, length: int) -> None:
        self.flash.append(("erase", address, length))

    def flash_write(self, address: int, data: bytes) -> None:
        self.flash.append(("write", address, data))

    def flash_done(self) -> None:
        self.flash.append(("done", 0, 0))

    def set_breakpoint(self, kind: int, address: int, length: int, on: bool) -> bool:
        (self.points.add if on else self.points.discard)((kind, address, length))
        return True

    def monitor(self, command: str) -> str:
        self.commands.append(command)
        return f"did {command}"


def stub() -> tuple[GdbStub, FakeTarget, list[bytes]]:
    sent: list[bytes] = []
    target = FakeTarget()
    return GdbStub(target, send=sent.append), target, sent


def test_a_packet_is_framed_with_its_modulo_256_checksum():
    assert rsp.frame(b"OK") == b"$OK#9a"


def test_binary_data_escapes_the_four_special_bytes_and_round_trips():
    data = bytes(range(256))
    escaped = rsp.escape_binary(data)
    assert not any(b in escaped for b in b"#$*") and rsp.unescape_binary(escaped) == data


def test_the_reader_splits_acks_packets_and_ctrl_c():
    items = rsp.PacketReader().feed(b"+$g#67\x03$m0,4#fd")
    assert items == [rsp.Ack(True), rsp.Packet(b"g"), rsp.Interrupt(), rsp.Packet(b"m0,4")]


def test_a_packet_with_a_bad_checksum_is_nacked():
    assert rsp.PacketReader().feed(b"$g#00") == [rsp.Ack(False)]


def test_a_packet_split_across_reads_is_reassembled():
    reader = rsp.PacketReader()
    assert reader.feed(b"$qSupp") == []
    assert reader.feed(b"orted#37") == [rsp.Packet(b"qSupported")]


def test_qsupported_offers_the_packet_size_and_the_xml_transfers():
    s, _, _ = stub()
    reply = s.handle(b"qSupported:multiprocess+;swbreak+")
    assert b"PacketSize=4000" in reply and b"qXfer:features:read+" in reply and b"qXfer:memory-map:read+" in reply


def test_the_target_description_names_the_m_profile_and_the_system_registers():
    s, _, _ = stub()
    reply = s.handle(b"qXfer:features:read:target.xml:0,3fff")
    assert reply.startswith(b"l")
    xml = rsp.unescape_binary(reply[1:]).decode()
    assert "org.gnu.gdb.arm.m-profile" in xml
    for name in ("msp", "psp", "primask", "basepri", "faultmask", "control"):
        assert f'name="{name}"' in xml


def test_the_memory_map_is_sent_in_pieces_when_asked_for_less():
    s, _, _ = stub()
    first = s.handle(b"qXfer:memory-map:read::0,20")
    assert first.startswith(b"m") and len(rsp.unescape_binary(first[1:])) == 0x20
    whole = rsp.unescape_binary(s.handle(b"qXfer:memory-map:read::0,fff")[1:]).decode()
    assert '<memory type="flash" start="0x8000000" length="0x40000">' in whole
    assert '<property name="blocksize">0x800</property>' in whole


def test_g_sends_every_register_little_endian_with_the_8_bit_ones_as_one_byte():
    s, _, _ = stub()
    reply = s.handle(b"g").decode()
    assert reply.startswith("00000000" + "01000000")
    assert len(reply) == 2 * (17 * 4 + 2 * 4 + 4 * 1)


def test_p_and_p_write_read_one_register():
    s, target, _ = stub()
    assert s.handle(b"Pf=01800008") == b"OK"
    assert target.regs[15] == 0x0800_8001
    assert s.handle(b"pf") == b"01800008"


def test_an_unknown_register_number_is_an_error():
    s, _, _ = stub()
    assert s.handle(b"p99") == b"E00"


def test_m_reads_and_m_writes_memory_in_hex():
    s, target, _ = stub()
    assert s.handle(b"M10,4:deadbeef") == b"OK"
    assert s.handle(b"m10,4") == b"deadbeef"


def test_x_writes_binary_memory_with_escapes():
    s, target, _ = stub()
    assert s.handle(b"X20,2:" + rsp.escape_binary(b"#}")) == b"OK"
    assert target.mem[0x20:0x22] == b"#}"


def test_a_read_the_target_refuses_is_e01_with_a_console_line():
    s, _, sent = stub()
    assert s.handle(b"m1000,4") == b"E01"
    assert sent and sent[0].startswith(b"$O")


def test_malformed_arguments_are_e02_not_an_exception():
    s, _, _ = stub()
    assert s.handle(b"mzz,4") == b"E02"


def test_breakpoints_and_watchpoints_go_to_the_target():
    s, target, _ = stub()
    assert s.handle(b"Z0,8000134,2") == b"OK"
    assert s.handle(b"Z2,e000ed08,4") == b"OK"
    assert target.points == {(0, 0x8000134, 2), (2, 0xE000ED08, 4)}
    assert s.handle(b"z0,8000134,2") == b"OK"
    assert target.points == {(2, 0xE000ED08, 4)}


def test_vflash_packets_reach_the_flash_model():
    s, target, _ = stub()
    assert s.handle(b"vFlashErase:08000000,800") == b"OK"
    assert s.handle(b"vFlashWrite:08000000:" + rsp.escape_binary(b"\x00\x50\x00\x20")) == b"OK"
    assert s.handle(b"vFlashDone") == b"OK"
    assert target.flash == [("erase", 0x0800_0000, 0x800), ("write", 0x0800_0000, b"\x00\x50\x00\x20"),
                            ("done", 0, 0)]


def test_continue_and_step_hand_control_back_without_a_reply():
    s, _, _ = stub()
    assert s.handle(b"c") is None and s.resume == "continue"
    assert s.handle(b"vCont;s:1") is None and s.resume == "step"


def test_a_stop_reply_names_the_signal_and_the_reason():
    s, _, sent = stub()
    s.report_stop(Stop(5, "watch:e000ed08"))
    assert sent[-1].startswith(b"$T05watch:e000ed08;thread:1;#")
    s.report_stop(Stop(11, message="HardFault (FORCED) at 0x08000100"))
    assert sent[-2].startswith(b"$O") and sent[-1].startswith(b"$T0bthread:1;#")


def test_the_end_of_the_run_is_reported_as_an_exit():
    s, _, sent = stub()
    s.report_stop(Stop(exited=1))
    assert sent[-1] == rsp.frame(b"W01")


def test_monitor_commands_go_to_the_target_and_print_on_the_console():
    s, target, sent = stub()
    assert s.handle(b"qRcmd," + b"time".hex().encode()) == b"OK"
    assert target.commands == ["time"]
    assert bytes.fromhex(sent[-1][2:-3].decode()) == b"did time\n"


def test_an_unsupported_packet_gets_the_empty_reply():
    s, _, _ = stub()
    assert s.handle(b"qTStatus") == b""


@pytest.fixture
def connected():
    a, b = socket.socketpair()
    conn = Connection(a, FakeTarget())
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(conn.serve()))
    thread.start()
    yield b, result, thread
    a.close()
    b.close()


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(rsp.frame(payload))
    data = b""
    while not data.endswith(b"#") and b"#" not in data[1:]:
        data += sock.recv(4096)
    while len(data) - data.index(b"#") < 3:
        data += sock.recv(4096)
    return data


def test_a_connection_acks_then_answers_and_returns_when_the_debugger_continues(connected):
    sock, result, thread = connected
    assert _exchange(sock, b"qAttached") == b"+" + rsp.frame(b"1")
    sock.sendall(rsp.frame(b"c"))
    thread.join(5)
    assert result == ["continue"]


def test_a_connection_stops_acking_after_qstartnoackmode(connected):
    sock, result, thread = connected
    assert _exchange(sock, b"QStartNoAckMode") == b"+" + rsp.frame(b"OK")
    assert _exchange(sock, b"qC") == rsp.frame(b"QC1")
    sock.sendall(rsp.frame(b"D"))
    thread.join(5)
    assert result == ["detach"]


def test_a_debugger_that_goes_away_ends_the_session(connected):
    sock, result, thread = connected
    sock.close()
    thread.join(5)
    assert result == ["gone"]


def test_qcrc_is_gdbs_crc32_of_the_memory() -> None:
    from emulator.gdb.server import gdb_crc32
    assert gdb_crc32(b"123456789") == 0x0376E6E7  # CRC-32/MPEG-2, what GDB's xcrc32 computes
    s, target, _ = stub()
    target.mem[0:4] = b"\x01\x02\x03\x04"
    assert s.handle(b"qCRC:0,4") == f"C{gdb_crc32(bytes([1, 2, 3, 4])):08x}".encode()


def test_exec_file_is_offered_only_when_known() -> None:
    s, _, _ = stub()
    assert b"exec-file" not in s.handle(b"qSupported:xmlRegisters=arm")
    assert s.handle(b"qXfer:exec-file:read:1:0,100") == b"E00"
    s.exec_file = "/tmp/boot.elf"
    assert b"qXfer:exec-file:read+" in s.handle(b"qSupported:xmlRegisters=arm")
    assert s.handle(b"qXfer:exec-file:read:1:0,100") == b"l/tmp/boot.elf"
