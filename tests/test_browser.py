"""report.html in a real headless Chromium, at a phone's, a tablet's and a laptop's width.

The pages are real runs: the shipped Adult example (the distilled student that fails) and a
hostile, many-groups audit with a check on a count of groups. At 420, 768 and 1280 px the
page never scrolls sideways, the verdict is on the first screen, and every piece of text has
WCAG AA contrast (4.5:1, 3:1 for large text) against what is behind it, computed from
``getComputedStyle``. One browser for the module; the pages are written once.

Needs Chromium and its driver (Debian: ``chromium``, ``chromium-driver``; ``.ci/run``
installs them). Without them the module is skipped with the reason, except in CI (``CI``
or ``FAIRGATE_REQUIRE_BROWSER`` set, as ``.ci/run`` does), where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from fairgate.report.html import render_html
from fairgate.run import GateRequest, run_gate
from tests.hostile.test_text_sinks import PAYLOADS

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "examples" / "adult"
WIDTHS = (420, 768, 1280)
HEIGHT = 800  # the first screen of a phone held upright

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find_browser() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).exists()), None)
    missing = [name for name, found in (("a Chromium browser (" + " / ".join(BROWSERS) + ")",
                                         browser), ("chromedriver", driver)) if not found]
    if missing:
        reason = (f"no headless browser: {' and '.join(missing)} not found on PATH "
                  "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
        if os.environ.get("FAIRGATE_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver = _find_browser()
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def _example_page(folder: Path) -> Path:
    report = run_gate(GateRequest(
        policy=ADULT / "policy.yaml", data=ADULT / "audit.parquet",
        teacher=ADULT / "teacher.onnx",
        student=ADULT / "student_distilled_T4.onnx"))
    assert report.verdict == "fail"
    path = folder / "example.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def _hostile_page(folder: Path) -> Path:
    """Hostile group values (markup, CI commands, a 5,000-character unbroken value), 60 zip
    codes with long labels, intersections, and a check on a count of groups."""
    rng = np.random.default_rng(8)
    n = 12_000
    values = [*PAYLOADS, "W" * 5000, *(f"zip{i:03d}-{'x' * 60}" for i in range(60))]
    df = pd.DataFrame({"place": rng.choice(values, n), "sex": rng.choice(["F", "M"], n),
                       "y": rng.integers(0, 2, n)})
    df["t"] = np.clip(df.y * 0.35 + rng.random(n) * 0.65, 0, 1)
    df["s"] = np.clip(df.t + rng.normal(0, 0.15, n), 0, 1)
    df.to_parquet(folder / "audit.parquet")
    (folder / "policy.yaml").write_text(
        "version: 1\n"
        "audit: {label: y, positive_label: 1, sensitive: [place, sex], intersections: true,"
        " min_group_size: 60}\n"
        "checks:\n"
        "  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}\n"
        "  - {id: lost, metric: significant_accuracy_loss_groups, max: 0}\n"
        "  - {id: acc, metric: accuracy, max_decrease: 0.01, severity: warn}\n"
        "statistics: {resamples: 100}\n", encoding="utf-8")
    report = run_gate(GateRequest(policy=folder / "policy.yaml", data=folder / "audit.parquet",
                                  teacher_scores="t", student_scores="s"))
    path = folder / "hostile.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pages")
    return {"example": _example_page(folder), "hostile": _hostile_page(folder)}


def _open(chrome: webdriver.Chrome, page: Path, width: int) -> None:
    chrome.set_window_size(width, HEIGHT)
    chrome.get(page.as_uri())
    inner = chrome.execute_script("return window.innerWidth")
    if inner != width:  # the window's frame: make the viewport itself the width we test
        chrome.set_window_size(2 * width - inner, HEIGHT)
        chrome.get(page.as_uri())
    assert chrome.execute_script("return window.innerWidth") == width


CASES = [(name, width) for name in ("example", "hostile") for width in WIDTHS]


@pytest.mark.parametrize(("name", "width"), CASES)
def test_page_fits_the_screen_and_shows_the_verdict_first(
        browser: webdriver.Chrome, pages: dict[str, Path], name: str, width: int) -> None:
    _open(browser, pages[name], width)
    sizes = browser.execute_script(
        "const d = document.documentElement;"
        "return [d.scrollWidth, document.body.scrollWidth, window.innerWidth,"
        " window.innerHeight];")
    assert sizes[0] <= sizes[2] and sizes[1] <= sizes[2], sizes
    box = browser.execute_script(
        "const r = document.querySelector('header[data-verdict]').getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom];")
    assert box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= sizes[3], box
    # the charts are drawn at the width of their box, no wider than the screen
    widest = browser.execute_script(
        "return Math.max(0, ...[...document.querySelectorAll('.panels svg')]"
        ".map(s => s.getBoundingClientRect().right));")
    assert widest <= width, widest


# Every element with text of its own: its colour (SVG text: its fill), its opacity and the
# opacities above it, its size and weight, and what is behind it: the first opaque
# background above it, and for chart text also the fills of the chart's own rectangles.
_TEXTS = """
const parse = c => { const m = c.match(/[\\d.]+/g); if (!m) return null;
  return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
const out = [];
for (const el of document.querySelectorAll('body *')) {
  if (['TITLE', 'STYLE', 'SCRIPT'].includes(el.tagName.toUpperCase())) continue;
  if (el.closest('title')) continue;
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const cs = getComputedStyle(el);
  const svg = el instanceof SVGElement;
  const fg = parse(svg ? cs.fill : cs.color);
  let opacity = 1, bg = null;
  for (let a = el; a && a.nodeType === 1; a = a.parentElement) {
    const s = getComputedStyle(a);
    opacity *= +s.opacity;
    if (svg && a.getAttribute && a.getAttribute('opacity')) opacity *= +a.getAttribute('opacity');
    const b = parse(s.backgroundColor);
    if (!bg && b && b[3] === 1) bg = b;
  }
  const behind = [bg || [255, 255, 255, 1]];
  const chart = el.closest('svg');
  if (chart) for (const r of chart.querySelectorAll('rect')) behind.push(parse(getComputedStyle(r).fill));
  out.push({text: el.textContent.trim().slice(0, 60), tag: el.tagName, fg, opacity,
            behind, size: parseFloat(cs.fontSize), weight: parseInt(cs.fontWeight)});
}
return out;
"""


def _luminance(rgb: list[float]) -> float:
    c = [x / 255 for x in rgb[:3]]
    c = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]


def contrast(fg: list[float], bg: list[float], opacity: float = 1.0) -> float:
    """WCAG 2.x contrast ratio of text ``fg`` (alpha and opacity blended) over ``bg``."""
    a = fg[3] * opacity
    seen = [a * f + (1 - a) * b for f, b in zip(fg[:3], bg[:3], strict=True)]
    hi, lo = sorted((_luminance(seen), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _large(t: dict[str, Any]) -> bool:
    """WCAG's large text: 18 pt (24 px), or 14 pt (18.66 px) bold."""
    return t["size"] >= 24 or (t["size"] >= 18.66 and t["weight"] >= 700)


def test_contrast_check_catches_faint_text() -> None:
    grey, white = [134, 142, 150, 1], [255, 255, 255, 1]  # #868e96: 3.3:1
    assert contrast(grey, white) < 4.5
    assert contrast([0, 0, 0, 1], white, opacity=0.3) < 4.5
    assert contrast([0, 0, 0, 1], white) == pytest.approx(21.0)


@pytest.mark.parametrize(("name", "width"), CASES)
def test_every_text_has_aa_contrast(browser: webdriver.Chrome, pages: dict[str, Path],
                                    name: str, width: int) -> None:
    _open(browser, pages[name], width)
    texts = browser.execute_script(_TEXTS)
    assert len(texts) > 100
    assert any(t["tag"] == "text" for t in texts)  # SVG labels are measured too
    poor = []
    for t in texts:
        need = 3.0 if _large(t) else 4.5
        worst = min(contrast(t["fg"], b, t["opacity"]) for b in t["behind"] if b)
        if worst < need:
            poor.append((round(worst, 2), need, t["tag"], t["text"]))
    assert not poor, poor[:10]
