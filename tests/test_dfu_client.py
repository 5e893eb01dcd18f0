"""The DFU / DfuSe client against the pure-Python device double (and PyUsbTransport's error mapping)."""

from __future__ import annotations

import errno
import os

import pytest

from hostside.dfu import (
    DfuClient,
    DfuDeviceGone,
    DfuError,
    DfuStall,
    DfuState,
    DfuStateError,
    DfuStatus,
    DfuStatusResponse,
    DfuTimeout,
    DfuUnsupported,
    DfuVerifyError,
    ProgressEvent,
)
from hostside.dfuse_layout import RegionError, parse_layout
from hostside.files import FirmwareImage
from hostside.transport import (
    DfuFunctionalDescriptor,
    NoUsbBackend,
    PyUsbTransport,
    Transport,
    TransportStall,
    TransportTimeout,
    find_pyusb_transports,
)
from tests.dfuse_device_double import SEED_LAYOUT, DfuseDeviceDouble, WireRecord

APP = 0x08008000
BUSY, IDLE = ["GETSTATUS", "GETSTATUS"], None


def _image(size: int, address: int = APP, seed: int = 1) -> FirmwareImage:
    data = bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))
    return FirmwareImage.from_segments([(address, data)])


def _client(dev: DfuseDeviceDouble, **kw: object) -> DfuClient:
    c = DfuClient(dev, 0, **kw)  # type: ignore[arg-type]
    c.start()
    dev.log.clear()
    return c


def _command(name: str) -> list[str]:
    """A DfuSe command as dfu-util 0.11 sends it: the DNLOAD, then GETSTATUS (dfuDNBUSY), GETSTATUS."""
    return [name, "GETSTATUS", "GETSTATUS"]


def test_double_satisfies_the_transport_protocol() -> None:
    assert isinstance(DfuseDeviceDouble(), Transport)


# -- start-up ---------------------------------------------------------------------------------------
def test_start_on_an_idle_device_sends_set_interface_and_one_getstatus() -> None:
    dev = DfuseDeviceDouble()
    DfuClient(dev, 0).start()
    assert dev.commands() == ["SET_INTERFACE 0", "GETSTATUS"]


def test_start_clears_dfu_error_with_clrstatus() -> None:
    dev = DfuseDeviceDouble()
    dev.state, dev.status = DfuState.dfuERROR, DfuStatus.errADDRESS
    DfuClient(dev, 0).start()
    assert dev.commands() == ["SET_INTERFACE 0", "GETSTATUS", "CLRSTATUS", "GETSTATUS"]
    assert dev.state == DfuState.dfuIDLE


def test_start_aborts_an_unfinished_download() -> None:
    dev = DfuseDeviceDouble()
    dev.state = DfuState.dfuDNLOAD_IDLE
    DfuClient(dev, 0).start()
    assert dev.commands() == ["SET_INTERFACE 0", "GETSTATUS", "ABORT", "GETSTATUS"]


def test_start_refuses_a_device_in_run_time_mode() -> None:
    dev = DfuseDeviceDouble()
    dev.state = DfuState.appIDLE
    with pytest.raises(DfuStateError, match="run-time"):
        DfuClient(dev, 0).start()


def test_alt_setting_can_be_chosen_by_name() -> None:
    dev = DfuseDeviceDouble(alt_names=["@Internal Flash  /0x08000000/16*002Ka,112*002Kg",
                                       "@Option Bytes  /0x1FFFF800/01*016 e"])
    assert DfuClient(dev, "@Option Bytes  /0x1FFFF800/01*016 e").alt_setting.alt == 1


def test_unknown_alt_setting_is_unsupported() -> None:
    with pytest.raises(DfuUnsupported):
        DfuClient(DfuseDeviceDouble(), 3)


# -- the wire sequence of docs/SEED_BOOTLOADER.md, DFU hosts ---------------------------------------------------------------
def test_all_first_download_with_leave_sends_what_dfu_util_0_11_sends() -> None:
    dev = DfuseDeviceDouble()
    c = _client(dev)
    img = _image(5000)
    c.download_dfuse(img, parse_layout(dev.layout))
    c.leave(APP)
    expected = (
        _command("ERASE 0x08008000") + _command("ERASE 0x08008800") + _command("ERASE 0x08009000")
        + _command("SET_ADDRESS 0x08008000") + _command("DNLOAD 2 (2048)")
        + _command("SET_ADDRESS 0x08008800") + _command("DNLOAD 2 (2048)")
        + _command("SET_ADDRESS 0x08009000") + _command("DNLOAD 2 (904)")
        + ["ABORT", "GETSTATUS"]
        + _command("SET_ADDRESS 0x08008000") + ["DNLOAD 2 (0)", "GETSTATUS"]
    )
    assert dev.commands() == expected
    assert dev.read_flash(APP, 5000) == img.segments[0].data


def test_every_erase_is_answered_first_with_dnbusy_then_dnload_idle() -> None:
    dev = DfuseDeviceDouble()
    _client(dev).download_dfuse(_image(3000), parse_layout(dev.layout))
    log = dev.log
    for i, rec in enumerate(log):
        if rec.command.startswith("ERASE"):
            assert [log[i + 1].reply_state, log[i + 2].reply_state] == [DfuState.dfuDNBUSY,
                                                                        DfuState.dfuDNLOAD_IDLE]


def test_leave_ends_when_the_device_reports_dfu_manifest() -> None:
    dev = DfuseDeviceDouble()
    c = _client(dev)
    result = c.leave(APP)
    assert result.last_state == DfuState.dfuMANIFEST and dev.gone


def test_device_vanishing_after_the_leave_request_is_the_expected_end() -> None:
    dev = DfuseDeviceDouble(answer_manifest=False)
    result = _client(dev).leave(APP)
    assert result.vanished is True


def test_interleaved_download_erases_each_page_right_before_its_first_chunk() -> None:
    dev = DfuseDeviceDouble()
    _client(dev, transfer_size=1024).download_dfuse(_image(3072), parse_layout(dev.layout),
                                                    erase_order="interleaved")
    order = [c for c in dev.commands() if c.startswith(("ERASE", "DNLOAD"))]
    assert order == ["ERASE 0x08008000", "DNLOAD 2 (1024)", "DNLOAD 2 (1024)",
                     "ERASE 0x08008800", "DNLOAD 2 (1024)"]


def test_download_ends_in_dfu_idle_after_abort() -> None:
    dev = DfuseDeviceDouble()
    _client(dev).download_dfuse(_image(100), parse_layout(dev.layout))
    assert dev.commands()[-2:] == ["ABORT", "GETSTATUS"] and dev.state == DfuState.dfuIDLE


def test_image_with_two_segments_in_one_page_erases_that_page_once() -> None:
    dev = DfuseDeviceDouble()
    img = FirmwareImage.from_segments([(APP, b"\x01" * 16), (APP + 0x100, b"\x02" * 16)])
    _client(dev).download_dfuse(img, parse_layout(dev.layout))
    assert dev.erase_requests == [APP]


# -- timing --------------------------------------------------------------------------------------------
def test_getstatus_polling_waits_each_bw_poll_timeout() -> None:
    dev = DfuseDeviceDouble(busy_model="background", page_erase_ms=130, erase_poll_ms=50)
    c = _client(dev)
    t0 = dev.now_ns()
    timing = c.erase_page(APP)
    # DNBUSY(50 ms) -> DNBUSY(80 ms left) -> DNLOAD_IDLE: the host waited exactly what it was told.
    assert timing.polls == 3 and timing.poll_wait_ms == 130
    assert dev.now_ns() - t0 == 130_000_000


def test_erase_progress_reports_how_long_the_device_stayed_busy() -> None:
    events: list[ProgressEvent] = []
    dev = DfuseDeviceDouble(page_erase_ms=300, erase_poll_ms=50)
    c = _client(dev, progress=events.append)
    c.download_dfuse(_image(4096), parse_layout(dev.layout))
    erases = [e for e in events if e.phase == "erase"]
    assert [e.address for e in erases] == [APP, APP + 2048]
    # reported 50 ms, but the CPU sat 300 ms in the USB interrupt: the second GETSTATUS was NAKed
    assert all(e.timing is not None and e.timing.elapsed_ns == 300_000_000 for e in erases)
    assert all(e.timing is not None and e.timing.poll_wait_ms == 50 for e in erases)


def test_seed_like_erase_outlasts_the_control_transfer_timeout() -> None:
    # 240 page erases of 40 ms keep the CPU in the interrupt for 9.6 s, beyond dfu-util's 5 s timeout.
    dev = DfuseDeviceDouble(layout=SEED_LAYOUT, erase_wipes=(APP, 0x08080000), page_erase_ms=40)
    with pytest.raises(DfuTimeout):
        _client(dev).erase_page(APP)


def test_device_busy_with_zero_poll_timeout_forever_times_out() -> None:
    class Stuck(DfuseDeviceDouble):
        stuck = False

        def _dnload(self, block: int, data: bytes) -> int:
            self.stuck = True
            return super()._dnload(block, data)

        def _getstatus(self) -> bytes:
            if self.stuck:
                return self._status_bytes(0, 0, DfuState.dfuDNBUSY)
            return super()._getstatus()

    with pytest.raises(DfuTimeout, match="zero poll timeout"):
        _client(Stuck()).erase_page(APP)


# -- the seed's erase bug ---------------------------------------------------------------------------
def _seed_device() -> DfuseDeviceDouble:
    # MEM_If_Erase_FS: every ERASE wipes the application start .. FLASH_BANK1_END (0x0807FFFF).
    return DfuseDeviceDouble(layout=SEED_LAYOUT, erase_wipes=(APP, 0x08080000), page_erase_ms=2)


def test_interleaved_erase_on_the_seed_corrupts_images_larger_than_one_sector() -> None:
    dev = _seed_device()
    c = _client(dev)
    img = _image(20 * 1024)
    c.download_dfuse(img, parse_layout(dev.layout), erase_order="interleaved")
    with pytest.raises(DfuVerifyError) as ei:
        c.verify(img)
    assert ei.value.first_address == APP
    assert dev.erase_requests == [0x08008000, 0x0800C000]


def test_all_first_erase_on_the_seed_only_costs_time() -> None:
    dev = _seed_device()
    c = _client(dev)
    img = _image(20 * 1024)
    c.download_dfuse(img, parse_layout(dev.layout))
    assert c.verify(img).compared == 20 * 1024
    # two requests, each asking for 240 page erases of which the 112 from APP to the end of 256 KiB exist
    assert len(dev.erased_pages) == 2 * 112


# -- errors --------------------------------------------------------------------------------------------
def test_err_address_from_the_device_is_raised_with_status_and_state_names() -> None:
    dev = DfuseDeviceDouble(error_range=(0x08009000, 0x0800A000))
    with pytest.raises(DfuError) as ei:
        _client(dev).download_dfuse(_image(8192), parse_layout(dev.layout))
    assert ei.value.status == DfuStatus.errADDRESS and ei.value.state == DfuState.dfuERROR
    assert "errADDRESS" in str(ei.value) and "dfuERROR" in str(ei.value)
    assert "ERASE 0x08009000" in str(ei.value)


def test_stalled_request_raises_dfu_stall_naming_it() -> None:
    dev = DfuseDeviceDouble(stall_when=lambda r: r.command == "SET_ADDRESS 0x08008800")
    with pytest.raises(DfuStall, match="SET_ADDRESS 0x08008800"):
        _client(dev).download_dfuse(_image(4096), parse_layout(dev.layout))


def test_next_session_recovers_from_the_stall_with_clrstatus() -> None:
    dev = DfuseDeviceDouble(stall_when=lambda r: r.command == "SET_ADDRESS 0x08008000")
    with pytest.raises(DfuStall):
        _client(dev).download_dfuse(_image(16), parse_layout(dev.layout))
    dev.stall_when = None
    DfuClient(dev, 0).start()
    assert dev.commands()[-3:] == ["GETSTATUS", "CLRSTATUS", "GETSTATUS"]


def test_first_poll_after_a_dfuse_command_must_be_dnbusy() -> None:
    class Eager(DfuseDeviceDouble):
        def _getstatus(self) -> bytes:  # type: ignore[override]
            reply = super()._getstatus()
            if reply[4] == DfuState.dfuDNBUSY:
                self.state = DfuState.dfuDNLOAD_IDLE
                return self._status_bytes(0, 0, DfuState.dfuDNLOAD_IDLE)
            return reply

    with pytest.raises(DfuStateError, match="dfuDNBUSY"):
        _client(Eager()).set_address(APP)


def test_writing_unerased_flash_reports_errprog() -> None:
    dev = DfuseDeviceDouble()
    dev.flash[0x8000:0x8010] = b"\x00" * 16
    with pytest.raises(DfuError) as ei:
        _client(dev).download_dfuse(_image(16), parse_layout(dev.layout), erase=False)
    assert ei.value.status == DfuStatus.errPROG


def test_download_into_read_only_segment_is_refused_before_any_request() -> None:
    dev = DfuseDeviceDouble()
    c = _client(dev)
    with pytest.raises(RegionError):
        c.download_dfuse(_image(64, 0x08000000), parse_layout(dev.layout))
    assert dev.commands() == []


def test_device_gone_mid_download_raises_dfu_device_gone() -> None:
    dev = DfuseDeviceDouble()
    c = _client(dev)
    dev.gone = True
    with pytest.raises(DfuDeviceGone):
        c.download_dfuse(_image(16), parse_layout(dev.layout))


# -- upload and verify ---------------------------------------------------------------------------------
def test_upload_counts_blocks_from_two_after_one_set_address() -> None:
    dev = DfuseDeviceDouble()
    dev.flash[0x8000:0x9400] = bytes(range(256)) * 20
    c = _client(dev)
    data = c.upload_dfuse(APP, 5000)
    assert data == bytes(dev.flash[0x8000:0x8000 + 5000])
    assert dev.commands() == (_command("SET_ADDRESS 0x08008000") + ["ABORT", "GETSTATUS", "UPLOAD 2 (2048)",
                              "UPLOAD 3 (2048)", "UPLOAD 4 (904)", "ABORT", "GETSTATUS"])


def test_upload_with_a_smaller_transfer_size_sets_the_address_for_every_block() -> None:
    # The device places block n at pointer + (n-2) * ITS wTransferSize: counting blocks with a smaller
    # host transfer size would read the wrong memory, so the client re-addresses each block.
    dev = DfuseDeviceDouble(transfer_size=4096)
    dev.flash[0x8000:0xA000] = os.urandom(0x2000)
    c = _client(dev, transfer_size=1024)
    assert c.upload_dfuse(APP, 0x2000) == bytes(dev.flash[0x8000:0xA000])
    assert [x for x in dev.commands() if x.startswith("UPLOAD")] == ["UPLOAD 2 (1024)"] * 8


def test_sequential_blocks_with_a_mismatched_transfer_size_read_the_wrong_memory() -> None:
    dev = DfuseDeviceDouble(transfer_size=4096)
    dev.flash[0x8000:0xA000] = os.urandom(0x2000)
    c = _client(dev, transfer_size=1024)
    assert c.upload_dfuse(APP, 0x2000, block_addressing="sequential") != bytes(dev.flash[0x8000:0xA000])


def test_verify_reports_first_differing_address_and_count() -> None:
    dev = DfuseDeviceDouble(corrupt_reads={APP + 0x123: 0x01, APP + 0x800: 0x80})
    c = _client(dev)
    img = _image(4096)
    c.download_dfuse(img, parse_layout(dev.layout))
    with pytest.raises(DfuVerifyError) as ei:
        c.verify(img)
    assert (ei.value.first_address, ei.value.differing, ei.value.compared) == (APP + 0x123, 2, 4096)
    assert "0x08008123" in str(ei.value)


# -- other DfuSe commands -------------------------------------------------------------------------------
def test_mass_erase_sends_the_single_byte_0x41() -> None:
    dev = DfuseDeviceDouble()
    dev.flash[0x9000] = 0
    _client(dev).mass_erase()
    assert dev.log[0].data == b"\x41" and dev.flash[0x9000] == 0xFF


def test_read_unprotect_needs_explicit_confirmation() -> None:
    dev = DfuseDeviceDouble()
    c = _client(dev)
    with pytest.raises(DfuUnsupported):
        c.read_unprotect()
    assert dev.commands() == []
    c.read_unprotect(confirm=True)
    assert dev.log[0].data == b"\x92"


def test_get_commands_lists_the_dfuse_commands() -> None:
    assert _client(DfuseDeviceDouble()).get_commands() == [0x00, 0x21, 0x41, 0x92]


def test_transfer_size_is_capped_at_4096_like_dfu_util_on_linux() -> None:
    assert DfuClient(DfuseDeviceDouble(transfer_size=32768), 0).transfer_size == 4096


# -- plain DFU 1.1 ------------------------------------------------------------------------------------------
def test_plain_dfu_download_numbers_blocks_from_zero_and_manifests() -> None:
    dev = DfuseDeviceDouble(dfuse=False, transfer_size=1024)
    c = _client(dev)
    payload = os.urandom(2500)
    c.download_plain(payload)
    dn = [x for x in dev.commands() if x.startswith("DNLOAD")]
    assert dn == ["DNLOAD 0 (1024)", "DNLOAD 1 (1024)", "DNLOAD 2 (452)", "DNLOAD 3 (0)"]
    assert dev.read_flash(dev.flash_base, 2500) == payload and dev.gone


def test_plain_dfu_upload_stops_at_the_short_block() -> None:
    dev = DfuseDeviceDouble(dfuse=False, transfer_size=1024, flash_size=3000)
    dev.flash[:] = os.urandom(3000)
    data = _client(dev).upload_plain()
    assert data == bytes(dev.flash)
    assert [x for x in dev.commands()] == ["UPLOAD 0 (1024)", "UPLOAD 1 (1024)", "UPLOAD 2 (1024)"]


def test_dfuse_commands_are_refused_on_a_plain_device() -> None:
    with pytest.raises(DfuUnsupported, match="0x0110"):
        _client(DfuseDeviceDouble(dfuse=False)).set_address(APP)


# -- protocol pieces --------------------------------------------------------------------------------------
def test_getstatus_reply_is_parsed_with_a_24_bit_poll_timeout() -> None:
    st = DfuStatusResponse.parse(bytes([0x08, 0x10, 0x27, 0x01, 10, 0]))
    assert (st.status, st.poll_timeout_ms, st.state) == (DfuStatus.errADDRESS, 0x012710, DfuState.dfuERROR)


def test_functional_descriptor_round_trips() -> None:
    fd = DfuFunctionalDescriptor(0x0B, 255, 2048, 0x011A)
    assert DfuFunctionalDescriptor.parse(fd.build()) == fd and fd.is_dfuse and fd.will_detach


def test_wire_record_names_dfuse_commands() -> None:
    assert WireRecord("DNLOAD", 0, b"\x41\x00\x80\x00\x08").command == "ERASE 0x08008000"


# -- PyUsbTransport -------------------------------------------------------------------------------------------
class _FakeUsbDevice:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def ctrl_transfer(self, *args: object) -> bytes:
        raise self.exc


@pytest.mark.parametrize(("code", "kind"), [(errno.EPIPE, TransportStall), (errno.ETIMEDOUT, TransportTimeout)])
def test_pyusb_errno_maps_to_stall_and_timeout(code: int, kind: type) -> None:
    import usb.core

    t = PyUsbTransport(_FakeUsbDevice(usb.core.USBError("x", errno=code)))
    with pytest.raises(kind):
        t.control_in(0xA1, 3, 0, 0, 6, 100)


def test_pyusb_timeout_error_class_maps_to_timeout() -> None:
    import usb.core

    t = PyUsbTransport(_FakeUsbDevice(usb.core.USBTimeoutError("t", errno=None)))
    with pytest.raises(TransportTimeout):
        t.control_out(0x21, 1, 0, 0, b"x", 100)


def test_stall_through_pyusb_reaches_the_client_as_dfu_stall() -> None:
    import usb.core

    class Dev(DfuseDeviceDouble):
        pass

    dev = Dev()
    t = PyUsbTransport(_FakeUsbDevice(usb.core.USBError("pipe", errno=errno.EPIPE)))
    t._info = dev.device_info()
    with pytest.raises(DfuStall, match="GETSTATUS"):
        DfuClient(t, 0).get_status()


def test_pyusb_wait_uses_the_injected_clock() -> None:
    waited: list[int] = []
    t = PyUsbTransport(object(), wait_ms=waited.append, now_ns=lambda: 42)
    t.wait_ms(50)
    assert waited == [50] and t.now_ns() == 42


def test_finding_devices_without_libusb_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import usb.core

    def no_backend(**kw: object) -> None:
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    with pytest.raises(NoUsbBackend, match="libusb"):
        find_pyusb_transports()


class _Intf:
    def __init__(self, alt: int, name_index: int, extra: bytes) -> None:
        self.bInterfaceClass, self.bInterfaceSubClass, self.bInterfaceProtocol = 0xFE, 0x01, 0x02
        self.bInterfaceNumber, self.bAlternateSetting, self.iInterface = 0, alt, name_index
        self.extra_descriptors = list(extra)


class _Cfg(list):
    bConfigurationValue = 1
    index = 0
    extra_descriptors: list[int] = []


class _PyUsbLikeDevice:
    """Just the attributes PyUsbTransport reads from a pyusb Device."""

    idVendor, idProduct, bcdDevice = 0x0483, 0xDF11, 0x0200
    iSerialNumber, iManufacturer, iProduct = 3, 1, 2
    bus, address, port_numbers = 1, 9, (4, 2)

    def __init__(self, extra: bytes, config_blob: bytes = b"") -> None:
        self.cfg = _Cfg([_Intf(0, 4, extra), _Intf(1, 5, b"")])
        self.config_blob = config_blob

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([self.cfg])

    def ctrl_transfer(self, rt: int, req: int, value: int, index: int, length: object, timeout: int) -> bytes:
        assert (rt, req, value) == (0x80, 6, 0x0200)
        return self.config_blob[: int(length)]  # type: ignore[call-overload]


_STRINGS = {1: "STMicroelectronics", 2: "DFU", 3: "5CE4826C3236", 4: "@Internal Flash  /0x08000000/16*002Ka,112*002Kg",
            5: "@Option Bytes  /0x1FFFF800/01*016 e"}


def test_pyusb_descriptors_give_alt_names_functional_descriptor_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import usb.util

    monkeypatch.setattr(usb.util, "get_string", lambda dev, i, langid=None: _STRINGS[i])
    fd = DfuFunctionalDescriptor(0x0B, 255, 1024, 0x011A)
    info = PyUsbTransport(_PyUsbLikeDevice(fd.build())).device_info()
    assert [a.name for a in info.alt_settings] == [_STRINGS[4], _STRINGS[5]]
    assert info.functional == fd and info.serial == "5CE4826C3236" and info.path == "1-4.2"
    assert (info.vid, info.pid, info.devnum, info.configuration) == (0x0483, 0xDF11, 9, 1)


def test_pyusb_functional_descriptor_falls_back_to_the_configuration_descriptor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import struct as _struct

    import usb.util

    monkeypatch.setattr(usb.util, "get_string", lambda dev, i, langid=None: _STRINGS[i])
    fd = DfuFunctionalDescriptor(0x09, 100, 4096, 0x011A)
    intf = bytes([9, 4, 0, 0, 0, 0xFE, 1, 2, 4])
    body = intf + fd.build()
    blob = _struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, 1, 0, 0x80, 50) + body
    info = PyUsbTransport(_PyUsbLikeDevice(b"", blob)).device_info()
    assert info.functional == fd
