"""The merge benchmarks' tables: a ratio is only taken between two runs of one invocation (benchmarks/merge_speed.py,
benchmarks/merge_scaling.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import merge_scaling  # noqa: E402
import merge_speed  # noqa: E402


def _run(seconds: float, gib: float, invocation: str) -> dict:
    return merge_speed.Run(seconds=seconds, peak_gib=gib, invocation=invocation).__dict__


def _invocation(floor_seconds: float) -> dict:
    return {"machine": "test machine", "date": "2026-12-06 00:00 UTC", "threads": None,
            "floor": _run(floor_seconds, 0.1, ""), "checkpoints": "test checkpoints", "floor_file_gb": 1.0}


def _document(rows: list[dict], *invocations: str, floors: tuple[float, ...] = (2.0, 4.0)) -> dict:
    entries = {key: _invocation(seconds) for key, seconds in zip(invocations, floors)}
    for key, entry in entries.items():
        entry["floor"]["invocation"] = key
    return {"invocations": entries, "rows": rows}


def _line(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(f"| {label} |")).strip("| ").split(" | ")


def test_ratios_within_one_invocation_only():
    rows = [{"label": "model_soup", "ours": _run(6.0, 0.5, "A"), "mergekit": _run(12.0, 10.0, "A"),
             "fusionbench": _run(18.0, 5.0, "B")}]
    cells = _line(merge_speed.render(_document(rows, "A", "B")), "model_soup")
    assert cells[1] == "6.0 (A)" and cells[3] == "3.00×"  # ÷ the floor of its own invocation (2.0 s), not B's
    assert cells[6] == "2.00×"  # mergekit, same invocation
    assert cells[10] == cells[11] == merge_speed.NO_RATIO  # FusionBench was measured in another invocation


def test_one_invocation_has_no_tags_and_every_ratio():
    rows = [{"label": "task_arithmetic", "ours": _run(5.0, 0.5, "A"), "fusionbench": _run(15.0, 5.0, "A")}]
    text = merge_speed.render(_document(rows, "A"))
    cells = _line(text, "task_arithmetic")
    assert cells[1] == "5.0" and cells[3] == "2.50×" and cells[10] == "3.00×" and cells[11] == "0.10×"
    assert "‡" not in text and "Invocation A" not in text


def test_update_keeps_old_cells_without_ratios_and_drops_unused_invocations():
    old = _document([{"label": "iso_c", "ours": _run(20.0, 1.0, "A"), "fusionbench": _run(40.0, 15.0, "A")},
                     {"label": "tsv_m", "ours": _run(100.0, 1.0, "A")}], "A")
    fresh = _document([{"label": "iso_c", "ours": _run(10.0, 1.0, "B")}], "B")
    merged = merge_speed.merge_documents(old, fresh)
    assert list(merged["invocations"]) == ["A", "B"]  # tsv_m's cell still comes from A
    cells = _line(merge_speed.render(merged), "iso_c")
    assert cells[8] == "40.0 (A)" and cells[10] == merge_speed.NO_RATIO
    assert cells[12] == "not re-compared (--update)"
    again = merge_speed.merge_documents(merged, _document([{"label": "tsv_m", "ours": _run(90.0, 1.0, "C")}], "C"))
    again = merge_speed.merge_documents(again, _document([{"label": "iso_c", "ours": _run(9.0, 1.0, "D"),
                                                          "fusionbench": _run(36.0, 15.0, "D")}], "D"))
    assert list(again["invocations"]) == ["C", "D"]
    assert _line(merge_speed.render(again), "iso_c")[10] == "4.00×"


def test_write_doc_replaces_only_the_marked_section(tmp_path):
    page = tmp_path / "page.md"
    begin, end = merge_speed.DOC_MARKERS
    page.write_text(f"intro\n{begin}\nold table\n{end}\noutro\n")
    merge_speed.write_doc(_document([{"label": "model_soup", "ours": _run(6.0, 0.5, "A")}], "A"), page)
    text = page.read_text()
    assert text.startswith(f"intro\n{begin}\n") and text.endswith(f"{end}\noutro\n") and "old table" not in text
    assert "| model_soup | 6.0 | 0.50 | 3.00× |" in text
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="needs one"):
        merge_speed.write_doc(_document([], "A"), page)


def test_unknown_row_is_refused():
    with pytest.raises(ValueError, match="no row of this benchmark"):
        merge_speed.render(_document([{"label": "nonsense"}], "A"))



def _scaling(cells: dict, floors: dict) -> dict:
    size = {"tasks": 4, "parameters": 37_800_000, "input_gb": 0.4, "cache": "warm", "labels": ["model_soup"],
            "floors": {k: _run(v, 0.1, k) for k, v in floors.items()}}
    return {"invocations": {k: {"machine": "m", "date": "d", "threads": None} for k in floors},
            "sizes": {"tiny": size}, "cells": cells}


def test_scaling_results_from_two_work_folders_merge_without_overlap():
    first = _scaling({"tiny | model_soup | ours": _run(6.0, 0.4, "A")}, {"A": 2.0})
    second = _scaling({"tiny | model_soup | mergekit": _run(9.0, 1.0, "B")}, {"B": 3.0})
    merged = merge_scaling.merge_results(first, second)
    assert set(merged["sizes"]["tiny"]["floors"]) == {"A", "B"} and len(merged["cells"]) == 2
    row = _line(merge_scaling.render(merged), "tiny (38M, T=4)")
    assert row[2] == "6.0" and row[4] == "3.00×" and row[5] == "9.0"  # ÷ its own invocation's floor
    assert row[7] == merge_speed.NO_RATIO  # mergekit ÷ asrmerge: measured in two invocations
    with pytest.raises(ValueError, match="both results hold"):
        merge_scaling.merge_results(merged, _scaling({"tiny | model_soup | ours": _run(5.0, 0.4, "C")}, {"C": 1.0}))


def test_scaling_ratios_to_asrmerge_come_from_one_invocation():
    one = _scaling({"tiny | model_soup | ours": _run(6.0, 0.4, "A"), "tiny | model_soup | mergekit": _run(9.0, 1.0, "A"),
                    "tiny | model_soup | fusionbench": _run(15.0, 1.0, "A")}, {"A": 2.0})
    row = _line(merge_scaling.render(one), "tiny (38M, T=4)")
    assert (row[7], row[10]) == ("1.50×", "2.50×")


def test_each_scaling_section_has_its_markers_and_figure_on_the_page():
    page = merge_scaling.DOC_PAGE.read_text()
    for section in merge_scaling.SECTIONS:
        markers, figure = merge_scaling.doc_targets(section)
        assert all(m in page for m in markers) and f"../figures/{figure.name}" in page, section


def test_a_work_folder_with_files_no_benchmark_wrote_is_refused(tmp_path):
    """The benchmarks delete their generated checkpoints and outputs as they go: only in a folder of their own."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds files no benchmark wrote"):
        merge_speed.claim_work_dir(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    fresh = merge_speed.claim_work_dir(tmp_path / "bench")
    (fresh / "large-v3-T4-seed0").mkdir()
    assert merge_speed.claim_work_dir(fresh) == fresh  # its own folder, claimed again on the next run


def test_profile_bounds_only_compare_cells_of_one_invocation():
    """benchmarks/merge_profile.py: the bound of a row against FusionBench is stated only when both cells come from
    one invocation, and says whether the target was met."""
    import merge_profile

    def row(label: str, ours: float, theirs: float, theirs_invocation: str) -> dict:
        return {"label": label, "ours": _run(ours, 1.0, "A"), "fusionbench": {**_run(theirs, 2.0, theirs_invocation),
                                                                             "status": "ok"}}

    document = _document([row("task_arithmetic", 3.0, 9.0, "A"), row("iso_c", 10.0, 30.0, "A"),
                          row("dare (p=0.9)", 10.0, 12.0, "B")], "A", "B")
    lines = merge_profile.bounds(document, startup_seconds=1.0, svd_seconds=2.0, draw_seconds=5.0)
    assert lines[0].startswith("- Task Arithmetic: 3.0 s = 1.50× the I/O floor") and "1.50× it" in lines[0]
    assert "(3.00×, same invocation: the 2.5× target met there)" in lines[1] and "more than 6.00×" in lines[1]
    assert len(lines) == 2  # DARE's FusionBench cell is of another invocation: no bound from it
