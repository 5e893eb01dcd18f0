"""Device, interface and alternate-setting selection (hostside.selection): by DFU class, not by VID:PID."""

from __future__ import annotations

import pytest

from hostside.selection import (
    DfuSelector,
    SelectionError,
    parse_alt,
    parse_device_ids,
    select_alt,
    select_transport,
)
from hostside.transport import DeviceInfo, DfuAltSetting, DfuFunctionalDescriptor


class Dev:
    """A transport that only answers device_info (selection needs nothing else)."""

    def __init__(self, vid: int, pid: int, alts: list[tuple[int, int, str, int]], serial: str = "") -> None:
        self.info = DeviceInfo(vid, pid, 0x100, serial, 1,
                               tuple(DfuAltSetting(i, a, n, p) for i, a, n, p in alts),
                               DfuFunctionalDescriptor())

    def device_info(self) -> DeviceInfo:
        return self.info


DAPBOOT = Dev(0x1209, 0xDB42, [(0, 0, "DAPBoot DFU", 2)], serial="A1")
MAPLE = Dev(0x1EAF, 0x0003, [(0, 0, "ERROR. Upload to RAM", 2), (0, 1, "Upload to Flash 0x8005000", 2),
                             (0, 2, "Upload to Flash 0x8002000", 2)])
RUNTIME = Dev(0xCAFE, 0x400B, [(2, 0, "app DFU", 1)])
NOT_DFU = Dev(0x1234, 0x5678, [])


def test_device_ids_parse_hex_pairs_and_wildcards():
    flt = parse_device_ids("1209:db42,*:0003,1eaf:")
    assert flt.ids == [(0x1209, 0xDB42), (None, 0x0003), (0x1EAF, None)]


@pytest.mark.parametrize("text", ["xyz:1", "1209:10000", "12345:1"])
def test_malformed_device_ids_are_refused(text):
    with pytest.raises(ValueError):
        parse_device_ids(text)


def test_alt_is_a_number_when_it_reads_as_one_else_a_name():
    assert parse_alt("2") == 2 and parse_alt("0x1") == 1 and parse_alt("DAPBoot DFU") == "DAPBoot DFU"


def test_with_nothing_given_the_first_dfu_device_is_chosen_whatever_its_ids():
    assert select_transport([NOT_DFU, DAPBOOT, MAPLE], DfuSelector()) is DAPBOOT


def test_vendor_and_product_pick_the_device():
    assert select_transport([DAPBOOT, MAPLE], DfuSelector(ids=parse_device_ids("1eaf:0003"))) is MAPLE


def test_serial_picks_the_device():
    assert select_transport([MAPLE, DAPBOOT], DfuSelector(serial="A1")) is DAPBOOT


def test_alt_by_number_picks_the_third_alt_setting():
    assert select_alt(MAPLE.info, DfuSelector(alt=2)).name == "Upload to Flash 0x8002000"


def test_alt_by_name_matches_the_interface_string_exactly():
    assert select_alt(MAPLE.info, DfuSelector(alt="Upload to Flash 0x8005000")).alt == 1


def test_interface_number_restricts_the_alt_settings():
    assert select_alt(RUNTIME.info, DfuSelector(interface=2)).protocol == 1
    with pytest.raises(SelectionError, match="--intf 0"):
        select_alt(RUNTIME.info, DfuSelector(interface=0))


def test_a_run_time_dfu_interface_counts_as_a_dfu_device():
    assert select_transport([NOT_DFU, RUNTIME], DfuSelector()) is RUNTIME


def test_a_device_without_dfu_interface_is_named_in_the_error():
    with pytest.raises(SelectionError, match="1234:5678 has no DFU interface"):
        select_transport([NOT_DFU], DfuSelector())


def test_a_selector_that_matches_nothing_names_what_was_found():
    with pytest.raises(SelectionError) as exc:
        select_transport([DAPBOOT], DfuSelector(ids=parse_device_ids("0483:df11")))
    assert "-d 0483:df11" in str(exc.value) and "1209:db42" in str(exc.value)


def test_an_alt_the_device_lacks_is_an_error_naming_its_alt_settings():
    with pytest.raises(SelectionError, match="DAPBoot DFU"):
        select_transport([DAPBOOT], DfuSelector(alt=3))


def test_several_matches_are_an_error_only_when_exactly_one_is_required():
    assert select_transport([DAPBOOT, MAPLE], DfuSelector()) is DAPBOOT
    with pytest.raises(SelectionError, match="more than one"):
        select_transport([DAPBOOT, MAPLE], DfuSelector(), first=False)
