"""Open a run's Snakemake HTML report in headless Chromium and check that every table and figure is in it and renders.

What a reader of `report.html` sees is a page drawn by JavaScript from data embedded in the file; a file can be
listed there and still not display (a wrong MIME type, a broken image, a caption that fails to render). This check
drives a real browser through the report as a reader would: every category and subcategory the run should have
(asrmerge.workflow.experiment.Experiment.report_items), every result file in it with the bytes on disk, every figure shown
as a decoded image, every HTML table shown in its frame with all its rows. Used by `asrmerge report-check` and the
report test; needs Chromium (Debian package `chromium`, or `--chromium PATH`) and the `playwright` package.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Flags for a headless Chromium on a machine without network or display (no first-run, sync or update traffic).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Environment variable naming the browser binary, when it is not on PATH under one of CHROMIUM_NAMES.
CHROMIUM_ENV = "ASRMERGE_CHROMIUM"
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 20_000


@dataclass
class ReportCheck:
    """The outcome: what was seen rendered, and every problem found (empty when the report is complete)."""

    rendered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary: `explicit`, else $ASRMERGE_CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    for candidate in (explicit, os.environ.get(CHROMIUM_ENV), *map(shutil.which, CHROMIUM_NAMES)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH and ${CHROMIUM_ENV}); "
        "install the Debian package `chromium` or pass the binary's path"
    )


def _open_subcategory(page, category: str, subcategory: str) -> None:
    page.goto(page.url.split("#")[0])
    page.wait_for_function("typeof categories !== 'undefined'")
    page.get_by_role("link", name=category, exact=True).click()
    page.get_by_role("link", name=subcategory, exact=True).click()


def _show(page, labels: Sequence[str]) -> bool:
    """Click the eye of the row whose cells are exactly `labels` (the result's label values); False if none."""
    rows = page.locator("tbody tr")
    for i in range(rows.count()):
        cells = [text.strip() for text in rows.nth(i).locator("td").all_inner_texts()]
        if cells[: len(labels)] == list(labels):
            rows.nth(i).locator("a[iconname=eye]").click()
            return True
    return False


def _image_shown(page, name: str) -> bool:
    return page.wait_for_function(
        """name => Array.from(document.images).some(img => img.src.startsWith('data:image/') &&
               img.src.includes('filename=' + name) && img.complete && img.naturalWidth > 100)""",
        arg=name, timeout=TIMEOUT_MS,
    ) is not None


def _table_rows_shown(page, name: str) -> int:
    page.wait_for_function(
        "name => Array.from(document.querySelectorAll('iframe')).some(f => f.src.includes('filename=' + name))",
        arg=name, timeout=TIMEOUT_MS,
    )
    frame = next(f for f in page.frames if f"filename={name}" in f.url)
    frame.wait_for_selector("table", timeout=TIMEOUT_MS)
    return frame.locator("tr").count()


def check_report(
    report: str | os.PathLike[str], expected: Mapping[str, Mapping[str, Sequence[str]]],
    screenshots: str | os.PathLike[str] | None = None, chromium: str | None = None,
) -> ReportCheck:
    """Check `report` against `expected` (category -> subcategory -> result files, paths as the workflow wrote
    them, readable from the working directory); screenshots of every rendered item go to `screenshots`."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    outcome = ReportCheck()
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(chromium), args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda err: outcome.problems.append(f"script error in the report: {err}"))
            page.goto(Path(report).resolve().as_uri())
            page.wait_for_function("typeof categories !== 'undefined' && typeof results !== 'undefined'")
            if shots:
                page.screenshot(path=str(shots / "report.png"))
            categories, results = page.evaluate("[categories, results]")
            for category, subcategories in expected.items():
                for subcategory, files in subcategories.items():
                    listed = categories.get(category, {}).get(subcategory)
                    if listed is None:
                        outcome.problems.append(f"{category} / {subcategory}: not in the report")
                        continue
                    for path in files:
                        try:
                            _check_item(page, category, subcategory, path, results.get(path), outcome, shots)
                        except PlaywrightError as err:
                            outcome.problems.append(f"{path}: not rendered ({str(err).splitlines()[0]})")
        finally:
            browser.close()
    return outcome


def _check_item(page, category, subcategory, path, entry, outcome: ReportCheck, shots: Path | None) -> None:
    if entry is None:
        outcome.problems.append(f"{category} / {subcategory}: {path} is not in the report")
        return
    _, _, payload = entry["data_uri"].partition(";base64,")
    if base64.b64decode(payload) != Path(path).read_bytes():
        outcome.problems.append(f"{path}: the report holds other bytes than the file (report older than the run?)")
        return
    mime, name = entry["mime_type"], entry["filename"]
    if not (mime.startswith("image/") or mime == "text/html"):
        outcome.rendered.append(f"{path} (embedded, {mime})")
        return  # downloads (CSV, Markdown, LaTeX): the bytes are what a reader gets
    _open_subcategory(page, category, subcategory)
    if not _show(page, [str(v) for v in entry["labels"].values()]):
        outcome.problems.append(f"{path}: no row with labels {entry['labels']} under {category} / {subcategory}")
        return
    if mime.startswith("image/"):
        _image_shown(page, name)
        outcome.rendered.append(f"{path} (image)")
    else:
        rows, expected_rows = _table_rows_shown(page, name), Path(path).read_text(encoding="utf-8").count("<tr")
        if rows != expected_rows:
            outcome.problems.append(f"{path}: {rows} table rows shown, the file has {expected_rows}")
            return
        outcome.rendered.append(f"{path} (table, {rows} rows)")
    if shots:
        page.screenshot(path=str(shots / f"{Path(path).stem}.{Path(path).suffix[1:]}.png"))
    log.info("rendered %s", path)
