"""The HTML report (``--report FILE.html``) of the seed bootloader and of a power-cut sweep:
what the page contains, that it needs nothing from the network, and that a real browser
(Debian's chromium, headless) loads it without console errors and draws something."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from emulator.cli import main

IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
RC_PAGES = 128  # STM32F103RC: 256 KiB in 2 KiB pages
SEED_PAGES_ASKED_PAST_THE_END = 128  # MEM_If_Erase_FS erases up to 0x0807FFFF on a 256 KiB part


class Elements(HTMLParser):
    """Every start tag with its attributes and the text directly inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.elements.append((tag, {k: v or "" for k, v in attrs}, text))
        self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1].append(data)

    def select(self, tag: str, cls: str | None = None, **attrs: str) -> list[dict[str, str]]:
        out = []
        for t, a, _ in self.elements:
            if t != tag or cls is not None and cls not in a.get("class", "").split():
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(a)
        return out

    def texts(self, tag: str, cls: str) -> list[str]:
        return ["".join(x) for t, a, x in self.elements if t == tag and cls in a.get("class", "").split()]


def parse(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    return p


def run_cli(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def reports() -> dict[str, Path]:
    """The seed's check report (the issue's acceptance command) and a small sweep's report."""
    out = Path(tempfile.mkdtemp(prefix="report-html-"))
    seed = out / "seed.html"
    code, _ = run_cli(["check", str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_big.bin"), "--report", str(seed)])
    assert code == 1  # the seed has findings
    sweep = out / "sweep.html"
    code, stdout = run_cli(["flash", str(IMAGES / "boot_seed.elf"), str(IMAGES / "app_small.bin"),
                            "--power-cut-sweep", "--sweep-points", "0,1000", "--json", "--report", str(sweep)])
    (out / "sweep.json").write_text(stdout)
    return {"seed": seed, "sweep": sweep, "sweep_json": out / "sweep.json"}


@pytest.fixture(scope="module")
def seed(reports: dict[str, Path]) -> Elements:
    return parse(reports["seed"].read_text())


@pytest.fixture(scope="module")
def sweep(reports: dict[str, Path]) -> Elements:
    return parse(reports["sweep"].read_text())


# -- self-contained ------------------------------------------------------------------------------------

def test_the_report_loads_nothing_from_anywhere_else(reports):
    for name in ("seed", "sweep"):
        html = reports[name].read_text()
        page = parse(html)
        for tag, attrs, _ in page.elements:
            for key in ("src", "href", "xlink:href", "data"):
                value = attrs.get(key, "")
                assert not value or value.startswith(("#", "data:")), f"{tag} {key}={value}"
        assert not re.search(r"@import|url\(\s*['\"]?(https?:|//)", html)
        assert not page.select("link", rel="stylesheet") and all("src" not in a for t, a, _ in page.elements
                                                                   if t == "script")


# -- the seed's check report ---------------------------------------------------------------------------

def test_each_run_of_the_check_has_a_flash_map_with_one_cell_per_page(seed):
    maps = seed.select("svg", "flashmap")
    assert [m["id"] for m in maps] == ["flashmap-all-first", "flashmap-interleaved"]
    cells = seed.select("rect", "page")
    assert len(cells) == 2 * (RC_PAGES + SEED_PAGES_ASKED_PAST_THE_END)
    assert sum("beyond" not in c["class"].split() for c in cells) == 2 * RC_PAGES


def test_the_seeds_erases_past_the_end_of_flash_are_cells_of_their_own_on_both_maps(seed):
    beyond = seed.select("rect", "page", data_state="erased_beyond_end")
    assert len(beyond) == 2 * SEED_PAGES_ASKED_PAST_THE_END
    assert {c["data-address"] for c in beyond} >= {"0x08040000", "0x0807F800"}


def test_the_seeds_erase_of_already_written_pages_shows_on_the_interleaved_map(seed, reports):
    html = reports["seed"].read_text()
    interleaved = parse(html[html.index('id="flashmap-interleaved"') - 30:])
    wiped = interleaved.select("rect", "page", data_state="erased_after_programmed")
    assert len(wiped) == 16  # 0x08008000-0x0800FFFF: the first two 16 KiB DfuSe units
    assert wiped[0]["data-address"] == "0x08008000"


def test_the_timeline_shows_the_wiping_erases_and_those_past_the_end(seed, reports):
    html = reports["seed"].read_text()
    interleaved = html[html.index('id="timeline-interleaved"'):]
    interleaved = interleaved[:interleaved.index("</svg>")]
    assert 'class="ev t-destroy"' in interleaved
    assert 'class="ev t-beyond"' in interleaved
    assert "erase wipes written data" in interleaved


def test_every_timeline_has_the_lanes_of_the_boot_flow(seed):
    lanes = [a["data-lane"] for a in seed.select("g", "lane")]
    assert lanes == ["cpu", "gpio", "usb", "dfu", "flash", "faults"] * 2


def test_timeline_marks_carry_their_pc_and_symbol(reports):
    html = reports["seed"].read_text()
    assert re.search(r"PC 0x080[0-9A-F]{5} boot_seed:HAL_FLASHEx_Erase\+0x28", html)


def test_the_findings_of_the_check_each_have_a_card_with_evidence_and_reference(seed):
    titles = ["".join(x) for t, a, x in seed.elements if t == "code"]
    cards = seed.select("article", "finding")
    assert len(cards) == 10
    assert {"erase-destroys-written-data", "erase-beyond-end-of-flash"} <= set(titles)
    assert len(seed.select("table", "evidence")) == 10 and len(seed.texts("p", "ref")) == 10


def test_the_jump_card_shows_the_vector_table_and_the_first_interrupt(reports):
    html = reports["seed"].read_text()
    assert "initial MSP" in html and "SysTick 1.211 ms after the jump" in html
    assert "VTOR at the jump" in html and "still the bootloader&#x27;s table" in html


def test_the_header_names_the_images_with_their_hashes(reports):
    html = reports["seed"].read_text()
    for image in ("boot_seed.elf", "app_big.bin"):
        digest = hashlib.sha256((IMAGES / image).read_bytes()).hexdigest()
        assert image in html and digest in html


# -- the sweep report ----------------------------------------------------------------------------------

def test_the_sweep_report_has_one_grid_cell_per_cut(sweep, reports):
    trials = json.loads(reports["sweep_json"].read_text())["trials"]
    cells = [c for c in sweep.select("rect", "cut") if "data-outcome" in c]  # the legend's swatches have none
    assert len(cells) == len(trials)
    assert sorted(c["data-outcome"] for c in cells) == sorted(t["outcome"] for t in trials)


def test_the_sweep_report_shows_the_reference_download_with_its_cut_points(sweep):
    lanes = [a["data-lane"] for a in sweep.select("g", "lane")]
    assert lanes[-1] == "cuts"
    assert len(sweep.select("rect", "page")) == RC_PAGES + SEED_PAGES_ASKED_PAST_THE_END


# -- in a real browser ---------------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
# .ci/run sets this: there the browser tests must run, never skip.
REQUIRED = bool(os.environ.get("STM32_BOOTSIM_REQUIRE_CHROMIUM"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not REQUIRED,
                                    reason="chromium is not installed (CI installs Debian's chromium: "
                                           "apt-get install chromium)")


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "STM32_BOOTSIM_REQUIRE_CHROMIUM is set but no chromium is on PATH"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", *extra, url],
            capture_output=True, text=True, check=False, env={**os.environ, "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def screenshots(reports: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    shots = {}
    for name in ("seed", "sweep"):
        png = reports[name].with_suffix(".png")
        result = chromium(reports[name].as_uri(), f"--screenshot={png}", "--window-size=1400,2000")
        assert result.returncode == 0, result.stderr[-2000:]
        shots[name] = (png, result.stderr)
    return shots


def console_lines(stderr: str) -> list[str]:
    # Chromium logs every console message and uncaught exception as "...:CONSOLE(...)] ...".
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@needs_chromium
@pytest.mark.parametrize("name", ["seed", "sweep"])
def test_the_report_loads_in_chromium_without_console_messages(screenshots, name):
    assert console_lines(screenshots[name][1]) == []


@needs_chromium
@pytest.mark.parametrize("name", ["seed", "sweep"])
def test_the_screenshot_of_the_report_is_not_blank(screenshots, name):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is in the test extras: pip install -e '.[test]'")
    with image_module.open(screenshots[name][0]) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1400, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    not_white = sum(n for n, c in colours if c != (255, 255, 255))
    assert len(colours) > 50
    assert not_white > 0.1 * rgb.size[0] * rgb.size[1]


@needs_chromium
def test_after_its_scripts_ran_the_page_still_has_its_lanes_cells_and_findings(reports):
    result = chromium(reports["seed"].as_uri(), "--dump-dom")
    assert result.returncode == 0
    dom = parse(result.stdout)
    assert len(dom.select("g", "lane")) == 12
    assert len(dom.select("rect", "page")) == 2 * (RC_PAGES + SEED_PAGES_ASKED_PAST_THE_END)
    assert len(dom.select("article", "finding")) == 10
    assert console_lines(result.stderr) == []


@needs_chromium
def test_a_link_with_a_time_window_opens_the_timelines_zoomed(reports):
    result = chromium(reports["seed"].as_uri() + "#t=5.8-6.1", "--dump-dom")
    dom = parse(result.stdout)
    assert dom.texts("span", "zoom-window") == ["showing 5.8 s – 6.1 s"] * 2
    ticks = dom.texts("text", "tick-label")
    assert "5.85 s" in ticks and "2 s" not in ticks
