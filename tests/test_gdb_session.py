"""The GDB stub on the emulated board, driven by Debian's gdb-multiarch in batch mode.

Every test waits on processes, never on the clock: timeouts are only hang guards.
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from unicorn import arm_const as A

from emulator.bootflow.scenario import flash_and_boot
from emulator.core.engine import ENV_VAR, c_engine_available
from emulator.core.machine import EmulatorError
from emulator.core.session import BoardOptions, build_board
from emulator.gdb import rsp
from emulator.gdb.machine_target import MachineTarget
from emulator.gdb.server import TargetError
from emulator.gdb.session import DebugSession, parse_gdb_address

GDB = shutil.which("gdb-multiarch")
IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
HELLO, BOOT, APP_BIN, APP_ELF = (str(IMAGES / n) for n in ("hello_base.elf", "boot_fixed.elf", "app_small.bin",
                                                           "app_small.elf"))
HANG_GUARD_S = 300
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (apt-get install gdb-multiarch)")
LISTEN = re.compile(r"gdb: waiting for a debugger on ([\d.]+):(\d+)")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    gdb: str


def _wait_for_port(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """The port the emulator printed (it binds before anything runs)."""
    seen: list[str] = []
    assert proc.stderr is not None
    while True:
        ready, _, _ = select.select([proc.stderr], [], [], HANG_GUARD_S)
        assert ready, f"the emulator printed no listening line: {seen}"
        line = proc.stderr.readline()
        assert line, f"the emulator exited before listening: {seen}"
        seen.append(line)
        match = LISTEN.search(line)
        if match:
            return int(match.group(2)), seen


def emulator_with_gdb(args: Sequence[str], commands: Sequence[str], elf: str | None = None) -> Result:
    """Run ``python -m emulator ARGS --gdb 127.0.0.1:0`` and a batch GDB running ``commands`` against it."""
    cut = list(args).index("--") if "--" in args else len(args)  # serve: the program's own options follow "--"
    proc = subprocess.Popen([sys.executable, "-m", "emulator", *args[:cut], "--gdb", "127.0.0.1:0", *args[cut:]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port, before = _wait_for_port(proc)
        gdb = run_gdb(port, commands, elf)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Result(proc.returncode, out, "".join(before) + err, gdb)


def run_gdb(port: int, commands: Sequence[str], elf: str | None = None) -> str:
    argv = [GDB or "gdb-multiarch", "-batch", "-nx"] + ([elf] if elf else [])
    argv += ["-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        argv += ["-ex", c]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    return done.stdout + done.stderr


def plain_run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, check=False)


def summary_line(text: str, key: str) -> str:
    line = next(x for x in text.splitlines() if x.startswith(key))
    return re.sub(r", [\d.]+ s wall", "", line)  # wall time is the one thing allowed to differ


# -- the done-when of issue 14 ------------------------------------------------------------------
@needs_gdb
def test_break_main_continue_info_registers_then_the_run_finishes_as_without_a_debugger() -> None:
    # GDB is given no file: the stub names the ELF (qXfer:exec-file) and GDB reads its symbols.
    r = emulator_with_gdb(["run", HELLO], ["break main", "continue", "info registers"])
    assert f"Reading symbols from {Path(HELLO).resolve()}" in r.gdb, r.gdb
    assert "Breakpoint 1, main ()" in r.gdb
    assert re.search(r"^pc\s+0x800044c\s+0x800044c <main>", r.gdb, re.M), r.gdb
    for reg in ("r0", "sp", "lr", "xpsr", "msp", "psp", "primask", "basepri", "faultmask", "control"):
        assert re.search(rf"^{reg}\s+0x", r.gdb, re.M), reg
    # Quitting the batch GDB detaches: the run finishes with its normal result and counts.
    plain = plain_run(["run", HELLO])
    assert r.code == plain.returncode == 0, r.stderr
    assert summary_line(r.stderr, "time") == summary_line(plain.stderr, "time")
    assert summary_line(r.stderr, "exceptions") == summary_line(plain.stderr, "exceptions")
    assert r.stdout.count("tick") == plain.stdout.count("tick") > 0


@needs_gdb
def test_flash_break_on_jump_halts_at_the_applications_reset_handler_with_the_jump_state() -> None:
    r = emulator_with_gdb(["flash", BOOT, APP_BIN, "--break-on-jump"], ["continue", "info registers pc msp"])
    assert "the first instruction after the bootloader's jump" in r.gdb, r.gdb
    assert "Program received signal SIGTRAP" in r.gdb
    assert re.search(r"^pc\s+0x8008134\s", r.gdb, re.M), r.gdb  # app_small's reset vector
    assert re.search(r"^msp\s+0x2000c000\s", r.gdb, re.M)
    assert "VTOR       0x08008000" in r.gdb and "this application" in r.gdb
    assert "SysTick    CSR 0x00000000 (stopped" in r.gdb and "enabled IRQs: none" in r.gdb
    assert "PLL off" in r.gdb
    assert r.code == 0 and "result    ok" in r.stderr, r.stdout + r.stderr


@needs_gdb
def test_serve_stops_at_a_breakpoint_while_dfu_util_waits_for_the_device() -> None:
    r = emulator_with_gdb(["serve", BOOT, "--poll-scale", "0", "--", "dfu-util", "-l"],
                          ["break HAL_RCC_ClockConfig_PLL_72MHz", "continue", "monitor time", "delete", "continue"])
    assert "Breakpoint 1, HAL_RCC_ClockConfig_PLL_72MHz ()" in r.gdb, r.gdb
    assert 'Found DFU: [0483:df11]' in r.stdout, r.stdout + r.stderr
    assert "exited normally" in r.gdb and r.code == 0


@needs_gdb
def test_run_break_on_jump_halts_at_the_first_app_images_reset_handler() -> None:
    # The seed bootloader jumps at once with BOOT1 high and a stack pointer that looks valid.
    r = emulator_with_gdb(["run", str(IMAGES / "boot_seed.elf"), "--app", APP_ELF, "--boot1", "high",
                           "--break-on-jump"], ["continue", "p/x $pc"])
    assert "halted at app:Reset_Handler (0x08008134): the first instruction after the jump into app_small.elf" in r.gdb
    assert "SysTick    CSR 0x00000007 (counting, interrupt on)" in r.gdb  # what the seed leaves running
    assert "$1 = 0x8008134" in r.gdb
    assert r.code == 0, r.stderr


# -- the same run with and without a debugger ---------------------------------------------------------
@needs_gdb
def test_a_debugger_that_only_continues_changes_nothing_the_firmware_or_the_usb_host_sees() -> None:
    plain = flash_and_boot(BOOT, APP_BIN)
    session = DebugSession("127.0.0.1", 0)
    gdb = subprocess.Popen([GDB or "gdb-multiarch", "-batch", "-nx", "-ex", f"target remote 127.0.0.1:{session.port}",
                            "-ex", "continue"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        debugged = flash_and_boot(BOOT, APP_BIN, on_outcome=lambda o: session.attach(o.board))
        session.finish(0, debugged.stop)
        out, _ = gdb.communicate(timeout=HANG_GUARD_S)
    finally:
        session.close()
        if gdb.poll() is None:
            gdb.kill()
    assert "exited normally" in out
    a, b = plain.board.machine, debugged.board.machine
    assert [e.as_dict() for e in b.events] == [e.as_dict() for e in a.events]
    assert (b.instructions, b.scheduler.cycles, b.now_ns) == (a.instructions, a.scheduler.cycles, a.now_ns)
    assert debugged.ok and plain.ok


# -- run control, registers and memory ------------------------------------------------------------------
@needs_gdb
def test_stepi_next_and_register_and_memory_writes() -> None:
    r = emulator_with_gdb(["run", HELLO], [
        "break main", "continue", "stepi", "p/x $pc", "next", "p/x $pc",
        "set $r7 = 0x1234", "p/x $r7", "set *(unsigned int *)0x20000100 = 0xdeadbeef", "x/xw 0x20000100",
        "p/x $xpsr", "x/xw 0xE000ED00", "monitor time", "detach"], HELLO)
    values = re.findall(r"^\$\d+ = (0x[0-9a-f]+)", r.gdb, re.M)
    assert values[0] == "0x800044e"  # one 16-bit instruction on from main (cpsie i)
    assert int(values[1], 16) > 0x800044e
    assert values[2] == "0x1234"
    assert "0x20000100:\t0xdeadbeef" in r.gdb
    assert "0xe000ed00:\t0x411fc231" in r.gdb  # CPUID of a Cortex-M3 r1p1, read through the SCB model
    assert re.search(r"emulated time \d+ ns .*, \d+ instructions", r.gdb)
    assert r.code == 0, r.stderr


@needs_gdb
def test_watch_on_vtor_stops_at_the_bootloaders_store() -> None:
    r = emulator_with_gdb(["flash", BOOT, APP_BIN], ["watch *(unsigned*)0xE000ED08", "continue", "p/x $pc"], BOOT)
    assert "Hardware watchpoint 1: *(unsigned*)0xE000ED08" in r.gdb
    assert "Old value = 0\nNew value = 134250496" in r.gdb, r.gdb  # 0x08008000: the application's table
    pc = int(re.findall(r"^\$\d+ = (0x[0-9a-f]+)", r.gdb, re.M)[-1], 16)
    assert 0x0800_0000 <= pc < 0x0800_8000  # inside the bootloader, at its store
    assert r.code == 0 and "result    ok" in r.stderr


@needs_gdb
def test_load_programs_flash_as_a_probe_and_compare_sections_matches() -> None:
    r = emulator_with_gdb(["run", HELLO], ["load", "compare-sections", "x/2xw 0x08008000", "monitor events 1",
                                           "monitor reset halt", "detach"], APP_ELF)
    assert "Transfer rate" in r.gdb, r.gdb
    assert re.search(r"Section \.\w+, range 0x8008000 -- 0x[0-9a-f]+: matched", r.gdb), r.gdb
    assert "MIS-MATCHED" not in r.gdb
    words = Path(APP_BIN).read_bytes()[:8]
    first = f"0x{int.from_bytes(words[:4], 'little'):08x}\t0x{int.from_bytes(words[4:], 'little'):08x}"
    assert first in r.gdb
    assert "debugger_flash" in r.gdb
    assert r.code == 0, r.stderr


@needs_gdb
def test_a_fault_stops_with_sigsegv_naming_it_and_the_end_of_the_run_is_an_exit() -> None:
    r = emulator_with_gdb(["run", str(IMAGES / "bad_msp.elf")], ["continue", "continue", "continue"])
    assert "HardFault: IMPRECISERR" in r.gdb, r.gdb
    assert "Program received signal SIGSEGV" in r.gdb
    assert "the run ended: lockup" in r.gdb
    assert "exited with code 01" in r.gdb
    assert r.code == 1


@needs_gdb
def test_monitor_commands() -> None:
    r = emulator_with_gdb(["run", BOOT], [
        "monitor help", "monitor time", "monitor boot1 high", "monitor pin PA0 high", "monitor pin PZ9 high",
        "monitor events 2", "monitor findings", "monitor power-cut", "monitor reset halt", "monitor nonsense",
        "detach"])
    assert "monitor commands:" in r.gdb
    assert "emulated time 0 ns (0.000000 ms), 0 instructions" in r.gdb  # halted before the first instruction
    assert "BOOT1 (PB2) driven high" in r.gdb and "PA0 driven high" in r.gdb
    assert "monitor pin: not a pin setting" in r.gdb
    assert "reset_vector" in r.gdb
    assert "the jump checks judge a downloaded application" in r.gdb
    assert "power cut at 0.000 ms and restored" in r.gdb
    assert "system reset (SYSRESETREQ)" in r.gdb
    assert "unknown monitor command 'nonsense'" in r.gdb
    assert r.code == 0, r.stderr


# -- raw protocol: Ctrl-C and a debugger that goes away ----------------------------------------------------
@contextmanager
def emulator_raw(args: Sequence[str]) -> Iterator[tuple[subprocess.Popen[str], socket.socket]]:
    proc = subprocess.Popen([sys.executable, "-m", "emulator", *args, "--gdb", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port, _ = _wait_for_port(proc)
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as sock:
            yield proc, sock
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def exchange(sock: socket.socket, payload: bytes | None) -> bytes:
    """Send a packet (or nothing) and return the next packet's payload (acks skipped)."""
    if payload is not None:
        sock.sendall(rsp.frame(payload))
    reader = rsp.PacketReader()
    while True:
        data = sock.recv(4096)
        assert data, "the emulator closed the connection"
        for item in reader.feed(data):
            if isinstance(item, rsp.Packet):
                return item.payload


def test_ctrl_c_halts_the_running_target_with_sigint() -> None:
    with emulator_raw(["run", BOOT, "--max-time", "3600s"]) as (proc, sock):
        assert exchange(sock, b"?").startswith(b"T05")
        sock.sendall(rsp.frame(b"c") + b"\x03")  # the firmware polls USB for good: only Ctrl-C stops it
        assert exchange(sock, None).startswith(b"T02")
        sock.sendall(rsp.frame(b"k"))
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: --gdb: the debugger ended the session (kill)")


@pytest.mark.parametrize("then", [b"", b"c"], ids=["while-halted", "while-running"])
def test_a_debugger_that_disconnects_mid_session_stops_the_run_with_one_line(then: bytes) -> None:
    with emulator_raw(["run", BOOT, "--max-time", "3600s"]) as (proc, sock):
        assert exchange(sock, b"qSupported:multiprocess+").startswith(b"PacketSize=")
        if then:
            sock.sendall(rsp.frame(then))
            sock.recv(1)  # the ack: the target runs
        sock.close()
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: --gdb: the debugger disconnected without detaching"), err
    assert "Traceback" not in err


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["99999", "localhost:", "port", "1.2.3.4:-1"])
def test_a_bad_gdb_port_is_one_line_and_exit_2(value: str) -> None:
    r = plain_run(["run", HELLO, "--gdb", value])
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--gdb" in r.stderr, r.stderr


def test_a_gdb_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        for command in (["run", HELLO], ["flash", BOOT, APP_BIN], ["serve", BOOT]):
            r = plain_run([*command, "--gdb", str(port), "--", "true"] if command[0] == "serve" else
                          [*command, "--gdb", str(port)])
            assert r.returncode == 2, (command, r.stderr)
            assert r.stderr.strip() == f"error: --gdb 127.0.0.1:{port}: cannot listen there: Address already in use"


def test_break_on_jump_needs_gdb_and_on_run_an_application() -> None:
    r = plain_run(["run", HELLO, "--break-on-jump"])
    assert r.returncode == 2 and "give --gdb" in r.stderr
    r = plain_run(["run", HELLO, "--break-on-jump", "--gdb", "0"])
    assert r.returncode == 2 and "needs the application beside the bootloader (--app APP)" in r.stderr


def test_parse_gdb_address() -> None:
    assert parse_gdb_address("3333") == ("127.0.0.1", 3333)
    assert parse_gdb_address(":3333") == ("127.0.0.1", 3333)
    assert parse_gdb_address("0.0.0.0:0") == ("0.0.0.0", 0)
    with pytest.raises(ValueError, match="0..65535"):
        parse_gdb_address("65536")


# -- the target, in-process ---------------------------------------------------------------------------------
def hello_target() -> MachineTarget:
    return MachineTarget(build_board(BoardOptions(image=HELLO)).machine)


def test_debugger_reads_of_peripherals_have_no_side_effects() -> None:
    t = hello_target()
    m = t.m
    m.run(max_ns=5_000_000)
    m.systick.set_field("CTRL", "COUNTFLAG", 1)  # the counter reached 0 since the firmware last looked
    events = len(m.events)
    csr = int.from_bytes(t.read_memory(0xE000E010, 4), "little")
    assert csr >> 16 & 1 and m.systick["CTRL"] >> 16 & 1  # a debugger read does not clear COUNTFLAG (B3.3.3)
    t.read_memory(0x40010C08, 4)  # GPIOB IDR: not the firmware's first read of BOOT1
    t.read_memory(0x40013800, 8)  # USART1 SR, DR
    t.read_memory(0x40005C00, 0x60)  # USB registers
    t.read_memory(0x40007000, 4)  # nothing modelled there: zeros, not an "unmodelled" event
    assert len(m.events) == events


def test_registers_a_debugger_may_not_break() -> None:
    t = hello_target()
    xpsr = t.registers()[16]
    t.set_register(16, 0)
    assert t.registers()[16] == xpsr & 0x07FFFFFF  # only the APSR flags: T and IPSR stay
    t.set_register(20, 0xFF)
    assert t.registers()[20] == 0xF0  # BASEPRI[7:4] only on the STM32F1
    t.set_register(15, 0x0800_0200)
    assert t.registers()[15] == 0x0800_0200


def test_flash_programming_as_a_probe() -> None:
    t = hello_target()
    with pytest.raises(TargetError, match="not erased"):
        t.flash_write(0x0800_0000, b"\x00\x01")
    with pytest.raises(TargetError, match="whole pages"):
        t.flash_erase(0x0800_0100, 0x800)
    with pytest.raises(TargetError, match="load"):
        t.write_memory(0x0800_0000, b"\x00")
    t.flash_erase(0x0801_0000, 0x800)
    t.flash_write(0x0801_0000, b"\x12\x34\x56\x78")
    t.flash_done()
    assert t.read_memory(0x0801_0000, 6) == b"\x12\x34\x56\x78\xff\xff"
    assert bytes(t.m.uc.mem_read(0x0801_0000, 4)) == b"\x12\x34\x56\x78"  # what the CPU fetches too


def test_breakpoints_leave_no_hook_behind() -> None:
    t = hello_target()
    assert t.set_breakpoint(1, 0x0800_044C, 2, True)
    assert t._code_hooks  # noqa: SLF001
    t.set_breakpoint(1, 0x0800_044C, 2, False)
    t.tidy()
    assert not t._code_hooks  # noqa: SLF001 - none set: nothing installed, nothing to pay


def test_bad_host_is_one_line() -> None:
    with pytest.raises(EmulatorError, match="cannot listen there"):
        DebugSession("192.0.2.1", 0)  # TEST-NET-1: not an address of this machine


# movs r0,#0; cmp r0,#0; ite eq; moveq r1,#1; movne r1,#2; mov r3,r1; b .   (in SRAM at 0x20000000)
IT_CODE = bytes.fromhex("0020" "0028" "0cbf" "0121" "0221" "0b46" "fee7")


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both CPU engines: the breakpoint's rewind is the engine's count correction."""
    if request.param == "c" and not c_engine_available():
        pytest.skip("the C engine is not built (python -m emulator.core._cengine_build)")
    monkeypatch.setenv(ENV_VAR, request.param)
    return request.param


def it_target() -> MachineTarget:
    t = hello_target()
    t.m.uc.mem_write(0x2000_0000, IT_CODE)
    t.set_register(15, 0x2000_0000)
    return t


def run_to_stop(t: MachineTarget) -> None:
    t.m.run(max_instructions=100, until=lambda: t.stop_pending is not None)


def test_a_breakpoint_stops_in_front_of_its_instruction_with_the_count_exact(engine: str) -> None:
    t = it_target()
    t.set_breakpoint(0, 0x2000_000A, 2, True)
    run_to_stop(t)
    assert t.stop_pending is not None and t.stop_pending.reason == "swbreak:"
    assert t.m.pc == 0x2000_000A and t.m.instructions == 5  # movne counts: it was in the block, condition false
    assert t.m.regs.reg_read(A.UC_ARM_REG_R3) == 0  # mov r3, r1 did not run


def test_a_breakpoint_inside_an_it_block_halts_at_the_end_of_its_block(engine: str) -> None:
    t = it_target()
    t.set_breakpoint(0, 0x2000_0006, 2, True)  # moveq: Unicorn cannot stop in an IT block
    run_to_stop(t)
    assert t.stop_pending is not None
    assert t.m.pc == 0x2000_000C and t.m.instructions == 7  # the whole block ran and counted (its b . too)
    assert t.m.regs.reg_read(A.UC_ARM_REG_R3) == 1


def test_a_step_runs_one_instruction_and_an_it_block_as_one(engine: str) -> None:
    t = it_target()
    t.begin_step()
    run_to_stop(t)
    assert t.m.pc == 0x2000_0002 and t.m.instructions == 1
    t.stop_pending = None
    t.end_step()
    t.set_register(15, 0x2000_0004)  # the ITE
    t.begin_step()
    run_to_stop(t)
    assert t.m.pc == 0x2000_000A  # in front of the first instruction after the IT block
    t.end_step()
