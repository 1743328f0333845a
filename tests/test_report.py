"""Tables, figures and the HTML report: synthetic score files with hand-checkable numbers, plus the real report."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from asrmerge.workflow.config import merge_branches
from asrmerge.report import figures, tables
from asrmerge.workflow import figure_plan as plan
from asrmerge.report.naming import OWN_DOMAIN, method_label, system_label

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------------
# A synthetic benchmark: 2 ID sets, 2 OOD sets (so the EP average 1:1 differs from the paper's 10:5 = 2:1), English,
# PT-BR, and two multilingual sets of which `zh` is scored by CER. Every set has 4 utterances of 10 words (50 chars);
# the numbers below are word errors per utterance (character errors for zh), so WER = sum / 40.
# ---------------------------------------------------------------------------------------------------------------------
ROLES = {"d1": "domain", "d2": "domain", "o1": "ood", "o2": "ood", "en": "english", "br": "brazilian",
         "de": "multilingual", "zh": "multilingual"}
ERRORS = {  # system -> set -> per-utterance errors
    "base": {"d1": [2] * 4, "d2": [4] * 4, "o1": [3] * 4, "o2": [5] * 4, "en": [1] * 4, "br": [2] * 4, "de": [1] * 4,
             "zh": [5] * 4},
    "joint": {"d1": [1] * 4, "d2": [2] * 4, "o1": [2] * 4, "o2": [4] * 4, "en": [2] * 4, "br": [3] * 4, "de": [2] * 4,
              "zh": [10] * 4},
    "finetuned/d1": {"d1": [0] * 4, "d2": [3] * 4, "o1": [3] * 4, "o2": [5] * 4, "en": [2] * 4, "br": [3] * 4,
                     "de": [2] * 4, "zh": [10] * 4},
    "finetuned/d2": {"d1": [2] * 4, "d2": [1] * 4, "o1": [4] * 4, "o2": [6] * 4, "en": [3] * 4, "br": [3] * 4,
                     "de": [3] * 4, "zh": [15] * 4},
    "merged/ties/density=0.2": {"d1": [1, 1, 2, 2], "d2": [2, 2, 3, 3], "o1": [2] * 4, "o2": [4] * 4, "en": [1] * 4,
                                "br": [2] * 4, "de": [1] * 4, "zh": [5] * 4},
    "merged/tsv_m/orthogonaliser=newton_schulz": {"d1": [1] * 4, "d2": [2] * 4, "o1": [1] * 4, "o2": [3] * 4,
                                                  "en": [2] * 4, "br": [3] * 4, "de": [2] * 4, "zh": [10] * 4},
}
SELECTIONS = {
    "ties/density=0.2": {"chosen_lambda": 0.6, "curve": [{"lambda": x, "wer": w} for x, w in
                                                         [(0.2, 0.30), (0.6, 0.20), (1.0, 0.25)]]},
    "tsv_m/orthogonaliser=newton_schulz": {"chosen_lambda": 1.2, "curve": [{"lambda": x, "wer": w} for x, w in
                                                                           [(0.6, 0.22), (1.2, 0.15), (1.8, 0.19)]]},
}
TIES = "merged/ties/density=0.2"
TSV = "merged/tsv_m/orthogonaliser=newton_schulz"


def _counts(errors: int, test_set: str) -> dict:
    if test_set == "zh":  # every word wrong (unsegmented text is one "word" per run), characters tell the truth
        return {"substitutions": 10, "deletions": 0, "insertions": 0, "reference_words": 10,
                "char_substitutions": errors, "char_deletions": 0, "char_insertions": 0, "reference_chars": 50}
    return {"substitutions": errors, "deletions": 0, "insertions": 0, "reference_words": 10,
            "char_substitutions": errors, "char_deletions": 0, "char_insertions": 0, "reference_chars": 50}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Score files, manifests and the loaded frame/errors of the synthetic benchmark."""
    tmp = tmp_path_factory.mktemp("report")
    score_files = {}
    for system, per_set in ERRORS.items():
        data = {}
        for test_set, errors in per_set.items():
            utterances = {f"{test_set}-{i}": _counts(e, test_set) for i, e in enumerate(errors)}
            total = {k: sum(u[k] for u in utterances.values()) for k in next(iter(utterances.values()))}
            data[test_set] = {"total": total, "utterances": utterances}
        path = tmp / (system.replace("/", "__") + ".json")
        path.write_text(json.dumps(data))
        score_files[system] = path
    manifests = {}
    for test_set in ROLES:
        path = tmp / f"{test_set}.jsonl"
        language = {"zh": "zh", "en": "en", "de": "de"}.get(test_set, "pt")
        path.write_text("".join(json.dumps({"id": f"{test_set}-{i}", "split": split, "language": language}) + "\n"
                                for i, split in enumerate(["validation", "test", "test"])))
        manifests[test_set] = path
    cer = tables.cer_sets(manifests)
    catalog = tables.system_catalog(list(ERRORS), SELECTIONS)
    frame = tables.load_scores(score_files, ROLES, cer, catalog)
    errors = tables.load_utterance_errors(score_files, cer)
    return {"tmp": tmp, "scores": score_files, "frame": frame, "errors": errors, "cer": cer}


@pytest.fixture(scope="module")
def written(world):
    out = world["tmp"] / "tables"
    out.mkdir()
    frame, errors = world["frame"], world["errors"]
    paths = {name: out / name for name in ["wer.csv", "wer.md", "wer.tex", "wer_wide.csv", "wer.html",
                                           "paper.csv", "paper.md", "paper.tex", "paper.html"]}
    tables.write_tables(frame, paths["wer.csv"], paths["wer.md"], paths["wer.tex"], paths["wer_wide.csv"],
                        paths["wer.html"], errors, "joint")
    table, pvalues = tables.paper_table(frame, errors, "joint")
    tables.write_paper_tables(table, pvalues, "joint", [paths[f"paper.{e}"] for e in ("csv", "md", "tex", "html")], frame)
    return {name: path for name, path in paths.items()}


def test_cer_is_used_for_unsegmented_languages(world):
    assert world["cer"] == ["zh"]
    frame = world["frame"]
    zh = frame[(frame.system == "base") & (frame.test_set == "zh")].iloc[0]
    assert zh.metric == "cer" and zh.error_rate == pytest.approx(0.10) and zh.wer == pytest.approx(1.0)


def test_rows_are_labelled_and_ordered(world):
    frame = world["frame"]
    labels = list(dict.fromkeys(frame.label))
    assert labels == ["Zero-shot", "Full-FT", "ID-FT: d1", "ID-FT: d2", "TIES (density=0.2), λ=0.6",
                      "TSV-M w/ NS, λ=1.2"]
    assert list(dict.fromkeys(frame.test_set)) == ["d1", "d2", "o1", "o2", "en", "br", "de", "zh"]
    assert system_label("merged/boosted_tsv_m/beta=0.3") == "BoostedTSV-M (β=0.3)"
    assert method_label("iso_cts", "common_space_fraction=0.8+orthogonaliser=svd") == "Iso-CTS w/ SVD (common=0.8)"
    assert system_label("merged/model_soup/default", None) == "Model Soup"
    # a single-value lambda grid chose nothing: no lambda in the label
    one = tables.system_catalog(["merged/karcher/default"], {"karcher/default": {"chosen_lambda": 1.0, "curve": [{}]}})
    assert one.label.iloc[0] == "Karcher mean" and one.family.iloc[0] == "parameter"


def test_paper_table_numbers(world):
    table, pvalues = tables.paper_table(world["frame"], world["errors"], "joint")
    assert list(table.columns) == ["ID", "OOD", "EP avg", "English", "Brazilian", "Multilingual"]
    assert list(table.index) == ["base", "joint", OWN_DOMAIN, TIES, TSV]
    expected = {  # hand-computed from ERRORS (see the comment at the top)
        "base": [30, 40, 35, 10, 20, 10],
        "joint": [15, 30, 22.5, 20, 30, 20],
        OWN_DOMAIN: [5, 45, 25, 25, 30, 25],
        TIES: [20, 30, 25, 10, 20, 10],
        TSV: [15, 20, 17.5, 20, 30, 20],
    }
    for system, row in expected.items():
        assert table.loc[system].to_numpy() == pytest.approx(row), system
    # significance against Full-FT: constant differences are significant, identical errors are not
    assert np.isnan(pvalues.at["joint", "ID"])
    assert pvalues.at[TIES, "ID"] == pytest.approx(0.00815, abs=1e-4)  # diffs 0,0,1,1 x2: W = 2.646
    assert pvalues.at[TIES, "OOD"] == 1.0 and pvalues.at[TIES, "English"] == 0.0
    assert pvalues.at[TSV, "ID"] == 1.0 and pvalues.at[TSV, "OOD"] == 0.0
    assert pvalues.at[OWN_DOMAIN, "ID"] == 0.0 and np.isnan(pvalues.at[OWN_DOMAIN, "OOD"])
    assert pvalues["EP avg"].isna().all()


def test_general_test_sets_get_their_own_column_outside_the_ep_average(world):
    frame = world["frame"]
    general = frame[frame.test_set == "o2"].assign(test_set="ep_general", group="EP general")
    table, _ = tables.paper_table(pd.concat([frame, general]), world["errors"], reference=None)
    assert list(table.columns) == ["ID", "OOD", "EP avg", "EP general", "English", "Brazilian", "Multilingual"]
    assert table.at["base", "EP general"] == pytest.approx(50.0)
    assert table.at["base", "OOD"] == pytest.approx(40.0) and table.at["base", "EP avg"] == pytest.approx(35.0)


def test_ep_average_weights_by_the_actual_numbers_of_sets(world):
    frame = world["frame"]
    averages = tables.group_averages(frame)
    # 2 ID and 2 OOD sets: (2·ID + 2·OOD) / 4, not the paper's fixed (10·ID + 5·OOD) / 15
    assert averages.at["base", "EP avg"] == pytest.approx((2 * 0.30 + 2 * 0.40) / 4)
    three_id = pd.concat([frame, frame[frame.test_set == "d1"].assign(test_set="d3")])
    averages = tables.group_averages(three_id)
    assert averages.at["base", "ID"] == pytest.approx((0.2 + 0.4 + 0.2) / 3)
    assert averages.at["base", "EP avg"] == pytest.approx((3 * (0.8 / 3) + 2 * 0.40) / 5)


def test_markdown_marks_best_and_significance(written):
    text = written["paper.md"].read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("|") and "---" not in line}
    assert rows["System"] == ["EP ID", "EP OOD", "EP avg", "English", "PT-BR", "Multilingual avg"]
    assert rows["Full-FT"][0] == "**15.00**" and rows["TSV-M w/ NS, λ=1.2"][0] == "**15.00**"  # ties both bold
    assert rows["TSV-M w/ NS, λ=1.2"][1:3] == ["**20.00** †", "**17.50**"]
    assert rows["TIES (density=0.2), λ=0.6"] == ["20.00 †", "30.00", "25.00", "**10.00** †", "**20.00** †", "**10.00** †"]
    assert rows["ID-FT (own domain)"][0] == "5.00 †"  # the oracle is not ranked: not bold although lowest
    assert rows["Zero-shot"][3] == "**10.00** †"
    assert "EP avg = (2·ID + 2·OOD) / 4" in text and "MAPSSWE, p < 0.05" in text and "CER for zh" in text


def test_latex_is_booktabs_and_balanced(written):
    for name in ("paper.tex", "wer.tex"):
        text = written[name].read_text()
        body = [line for line in text.splitlines() if not line.startswith("%")]
        assert body[0].startswith(r"\begin{tabular}{l") and body[-1] == r"\end{tabular}"
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert rule in body, (name, rule)
        assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
        columns = len(re.match(r"\\begin\{tabular\}\{(l r*)\}", body[0].replace("lr", "l r")).group(1).replace(" ", ""))
        rows = [line for line in body if line.endswith(r"\\") and r"\multicolumn" not in line]
        assert rows and all(line.count("&") - line.count(r"\&") == columns - 1 for line in rows), name
        stripped = text.replace(r"\{", "").replace(r"\}", "")
        assert stripped.count("{") == stripped.count("}")
        assert "λ" not in body and r"$\lambda$" in text and r"\textbf{" in text and r"$^\dagger$" in text
    paper = [line for line in written["paper.tex"].read_text().splitlines() if not line.startswith("%")]
    assert sum(line == r"\midrule" for line in paper) == 4  # header + 3 family blocks (ID-FT, task vector, subspace)
    assert r"TIES (density=0.2), $\lambda$=0.6 & 20.00$^\dagger$ & 30.00 & 25.00 & \textbf{10.00}$^\dagger$" in "\n".join(paper)
    assert r"\multicolumn{2}{c}{EP in-domain}" in written["wer.tex"].read_text()


def test_csv_outputs(written, world):
    paper = pd.read_csv(written["paper.csv"], index_col="system")
    assert paper.at[TSV, "label"] == "TSV-M w/ NS, λ=1.2" and paper.at[TSV, "family"] == "subspace"
    assert paper.at[TSV, "EP avg"] == pytest.approx(17.5) and paper.at[TSV, "EP OOD p"] == 0.0
    wide = pd.read_csv(written["wer_wide.csv"], index_col="system")
    assert wide.at[TIES, "d1"] == pytest.approx(15.0) and wide.at[TIES, "zh"] == pytest.approx(10.0)
    assert wide.at[TIES, "en p"] == 0.0 and wide.at[TSV, "en p"] == 1.0
    long = pd.read_csv(written["wer.csv"])
    assert len(long) == len(ERRORS) * len(ROLES)
    assert {"system", "label", "family", "test_set", "group", "metric", "wer", "cer", "error_rate"} <= set(long.columns)
    per_set = written["wer.md"].read_text()
    assert "zh (CER)" in per_set and "| ID-FT: d1 " in per_set and "**0.00**" in per_set
    html = written["paper.html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<b>17.50</b>" in html and "<sup>†</sup>" in html
    assert 'colspan="2"' in written["wer.html"].read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Which figures a config asks for
# ---------------------------------------------------------------------------------------------------------------------


def _branches(methods, diagnostics=True):
    config = {"merge": {"methods": methods, "diagnostics": diagnostics}}
    return config, merge_branches(config)


def test_requested_figures_follow_the_config():
    config, branches = _branches([{"method": "task_arithmetic"}, {"method": "ties", "params": {"density": 0.2}}])
    assert plan.requested_figures(config, branches) == ["wer_by_system", "id_vs_ood", "heatmap", "lambda_curves",
                                                        "spectra", "effective_rank"]
    config, branches = _branches([{"method": "ties"}, {"method": "boosted_tsv_m"}], diagnostics=False)
    assert plan.requested_figures(config, branches) == ["wer_by_system", "id_vs_ood", "heatmap", "lambda_curves"]
    config, branches = _branches([{"method": "karcher"}, {"method": "pcb"}])
    assert "spectra" not in plan.requested_figures(config, branches)
    config, branches = _branches([{"method": "boosted_tsv_m", "params": {"beta": [0.1, 0.2, 0.3]}}])
    assert "beta_sweep" in plan.requested_figures(config, branches)
    assert plan.requested_figures({"merge": {"methods": []}}, []) == ["wer_by_system", "id_vs_ood", "heatmap"]


def test_figures_read_only_the_files_they_show():
    betas = [round(0.1 * i, 1) for i in range(1, 11)]
    config, branches = _branches([
        {"method": "task_arithmetic"}, {"method": "ties"},
        {"method": "tsv_m", "params": {"orthogonaliser": ["svd", "newton_schulz"]}},
        {"method": "boosted_tsv_m", "params": {"beta": betas}}, {"method": "iso_c"},
    ])
    assert plan.figure_branches("spectra", branches) == [
        "task_arithmetic/default", "tsv_m/orthogonaliser=svd", "tsv_m/orthogonaliser=newton_schulz",
        "boosted_tsv_m/beta=0.3", "iso_c/default"]
    assert plan.figure_branches("beta_sweep", branches) == [f"boosted_tsv_m/beta={b}" for b in betas]
    assert plan.figure_inputs("beta_sweep", branches, "R") == {"table": "R/tables/wer.csv"}
    assert plan.figure_inputs("effective_rank", branches, "R")["diagnostics"][0] == \
        "R/merges/task_arithmetic/default/diagnostics.json"
    assert len(plan.figure_inputs("lambda_curves", branches, "R")["selections"]) == 15
    assert plan.spectrum_layer({}) == "auto" and plan.spectrum_layer({"report": {"spectrum_layer": "x"}}) == "x"


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


def _check_figure(folder: Path, name: str, max_width_in: float = 11.5) -> None:
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 3000, name
    with Image.open(png) as image:
        width, height = image.size
    assert 300 < width <= max_width_in * 300 and height > 300, (name, width, height)  # 300 dpi, paper size


def _diagnostics(tmp: Path, branch: str, decay: float, layers: int = 3) -> Path:
    """A diagnostics.json of the engine's format: fc1 and q_proj in `layers` encoder and decoder layers."""
    tensors = {}
    for stack in ("encoder", "decoder"):
        for i in range(layers):
            for kind in ("fc1.weight", "self_attn.q_proj.weight"):
                merged = (np.arange(1, 33) ** -decay).tolist()
                tensors[f"model.{stack}.layers.{i}.{kind}"] = {
                    "shape": [64, 16], "merged_singular_values": merged[:16], "merged_effective_rank": 16 / (1 + decay + i),
                    "task_singular_values": [(np.arange(1, 17) ** -0.5 * s).tolist() for s in (1.0, 0.8)],
                    "task_effective_rank": [12.0, 11.0], "task_norms": [1.0, 0.8], "merged_norm": 1.2,
                    "sign_conflict_rate": 0.3,
                }
    path = tmp / (branch.replace("/", "__") + ".json")
    path.write_text(json.dumps({"method": branch.split("/")[0], "summary": {}, "tensors": tensors}))
    return path


def test_every_figure_draws_from_synthetic_files(world, tmp_path):
    frame = world["frame"]
    for name in ("wer_by_system", "id_vs_ood", "heatmap"):
        figures.FIGURES[name](frame, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        _check_figure(tmp_path, name)
    # beta sweep: reuse the TIES rows as BoostedTSV-M at three betas
    boosted = [f"boosted_tsv_m/beta={b}" for b in (0.1, 0.3, 1.0)]
    rows = [frame[frame.system == TIES].assign(system=f"merged/{b}") for b in boosted]
    figures.beta_sweep(pd.concat([frame, *rows]), boosted, tmp_path / "beta_sweep.png", tmp_path / "beta_sweep.pdf")
    _check_figure(tmp_path, "beta_sweep")
    selections = {}
    for branch, record in SELECTIONS.items():
        selections[branch] = tmp_path / (branch.replace("/", "__") + ".sel.json")
        selections[branch].write_text(json.dumps(record))
    figures.lambda_curves(selections, tmp_path / "lambda_curves.png", tmp_path / "lambda_curves.pdf")
    _check_figure(tmp_path, "lambda_curves")
    diagnostics = {b: _diagnostics(tmp_path, b, d) for b, d in
                   [("task_arithmetic/default", 1.5), ("tsv_m/default", 0.7), ("boosted_tsv_m/beta=0.3", 0.4),
                    ("iso_c/default", 0.0)]}
    for name in ("spectra", "effective_rank"):
        figures.FIGURES[name](diagnostics, "auto", tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        _check_figure(tmp_path, name)


def test_every_method_has_its_own_colour_in_every_figure():
    from asrmerge.merging.registry import list_methods
    from asrmerge.report.naming import BASELINE_COLOURS, METHOD_COLOURS, system_colour

    methods = [m.name for m in list_methods()]
    assert set(METHOD_COLOURS) == set(methods)
    assert len(set(METHOD_COLOURS.values()) | set(BASELINE_COLOURS.values())) == len(METHOD_COLOURS) + len(BASELINE_COLOURS)
    assert system_colour("merged/tsv_m/orthogonaliser=newton_schulz") == system_colour("tsv_m") == METHOD_COLOURS["tsv_m"]
    assert system_colour("finetuned/weather") == BASELINE_COLOURS["finetuned"]


def test_choose_layer():
    names = [f"model.{s}.layers.{i}.{k}" for s in ("encoder", "decoder") for i in range(32)
             for k in ("fc1.weight", "fc2.weight")]
    assert figures.choose_layer(names) == "model.decoder.layers.16.fc1.weight"
    assert figures.choose_layer(names, "model.encoder.layers.3.fc2.weight") == "model.encoder.layers.3.fc2.weight"
    assert figures.choose_layer(names, r"decoder\.layers\.7\.fc2") == "model.decoder.layers.7.fc2.weight"
    with pytest.raises(ValueError, match="spectrum layer"):
        figures.choose_layer(names, "q_proj")


def test_spectra_from_real_merge_diagnostics(tiny_whisper, tmp_path):
    """The engine's own diagnostics.json (tiny Whisper, three fine-tunes) draws both diagnostics figures."""
    from asrmerge.merging.engine import compute_task_vector, merge

    base, finetuned = tiny_whisper
    task_vectors = [compute_task_vector(base, ft, tmp_path / f"tv{i}.safetensors") for i, ft in enumerate(finetuned)]
    diagnostics = {}
    for method in ("task_arithmetic", "tsv_m", "iso_c"):
        diagnostics[f"{method}/default"] = tmp_path / f"{method}.json"
        merge(base, task_vectors=task_vectors, method=method, params={}, out_path=tmp_path / f"{method}.safetensors",
              device="cpu", svd_dtype=torch.float32, diagnostics_path=diagnostics[f"{method}/default"])
    data = json.loads(diagnostics["iso_c/default"].read_text())["tensors"]
    layer = figures.choose_layer(list(data))
    assert layer == "model.decoder.layers.0.fc1.weight"
    spectrum = np.asarray(data[layer]["merged_singular_values"])
    assert spectrum == pytest.approx(np.full_like(spectrum, spectrum[0]), rel=1e-3)  # Iso-C: flat by construction
    for name in ("spectra", "effective_rank"):
        figures.FIGURES[name](diagnostics, "auto", tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        _check_figure(tmp_path, name)


# ---------------------------------------------------------------------------------------------------------------------
# The Snakemake report of a finished micro run
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro_report(micro_workflow, tmp_path_factory):
    """The Snakemake report of the finished micro run."""
    config_path, _, _ = micro_workflow
    report = tmp_path_factory.mktemp("report") / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT),
         "--configfile", str(config_path), "--report", str(report)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return report


@pytest.mark.slow
def test_html_report_has_every_figure_and_table_with_captions(micro_workflow, micro_report):
    _, results, _ = micro_workflow
    report = micro_report
    html = report.read_text()
    results_json = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.DOTALL).group(1))
    by_name = {Path(path).name: entry for path, entry in results_json.items()}
    expected_figures = ["wer_by_system", "id_vs_ood", "heatmap", "lambda_curves", "spectra", "effective_rank"]
    for figure in expected_figures:
        entry = by_name[f"{figure}.png"]
        assert entry["data_uri"].startswith("data:image/png"), figure
        assert len(entry["caption"]) > 200, figure  # a rendered caption, not the fallback
    assert "rank collapse" in by_name["spectra.png"]["caption"]
    assert "circled point is the λ chosen" in by_name["lambda_curves.png"]["caption"].replace("\u03bb", "λ")
    for table in ("paper.html", "paper.csv", "paper.tex", "paper.md", "wer.html", "wer.csv", "wer.tex", "wer.md",
                  "wer_wide.csv"):
        assert table in by_name, table
        assert "MAPSSWE" in by_name[table]["caption"], table
    assert "paper&#8217;s layout" in by_name["paper.html"]["caption"] or "paper's layout" in by_name["paper.html"]["caption"]
    assert "can one merged Whisper replace" in html  # report/workflow.rst, the global description
    assert "weather: domain" in html
    for figure in expected_figures:
        assert (results / "figures" / f"{figure}.pdf").stat().st_size > 3000


def _browser_or_skip() -> None:
    """Skip without Chromium or playwright, unless ASRMERGE_REQUIRE_BROWSER is set (CI installs both)."""
    from asrmerge.report.check import find_chromium

    try:
        import playwright.sync_api  # noqa: F401

        find_chromium()
    except (ImportError, FileNotFoundError) as err:
        if os.environ.get("ASRMERGE_REQUIRE_BROWSER"):
            raise
        pytest.skip(f"no headless browser: {err}")


@pytest.mark.slow
def test_report_renders_every_table_and_figure_in_chromium(micro_workflow, micro_report, tmp_path):
    """A reader's view: headless Chromium opens report.html; every table and figure the micro config has is listed,
    holds the bytes on disk, and renders (figures as decoded images, HTML tables with all their rows)."""
    _browser_or_skip()
    from asrmerge.workflow.experiment import Experiment
    from asrmerge.report.check import check_report

    config_path, _, _ = micro_workflow
    experiment = Experiment.load(config_path, workdir=ROOT)
    expected = experiment.report_items()
    outcome = check_report(micro_report, expected, screenshots=tmp_path / "shots")
    assert outcome.ok, outcome.problems
    images = [item for item in outcome.rendered if item.endswith("(image)")]
    assert len(images) == len(experiment.figures) >= 5
    assert sum("(table," in item for item in outcome.rendered) == 2  # wer.html and paper.html
    assert len(outcome.rendered) == sum(len(files) for group in expected.values() for files in group.values())
    shot = Image.open(tmp_path / "shots" / "id_vs_ood.png.png")
    assert np.asarray(shot.convert("L")).std() > 20  # a figure on the page, not a blank panel

    # A stale report is caught: the table on disk no longer matches what the report holds.
    paper = Path(experiment.table_files()["paper_markdown"])
    original = paper.read_bytes()
    try:
        paper.write_bytes(original + b"\n")
        stale = check_report(micro_report, {"Tables": {"paper layout": [str(paper)]}})
    finally:
        paper.write_bytes(original)
    assert not stale.ok and "other bytes" in stale.problems[0]


@pytest.mark.slow
def test_table_figure_and_export_commands_write_what_the_rules_wrote(micro_workflow, monkeypatch, capsys, tmp_path):
    """`asrmerge table`, `asrmerge figure` and `asrmerge export-merge` on a finished run write its tables, figures and
    an exported merge byte for byte as its rules did."""
    config_path, _, _ = micro_workflow
    from asrmerge.cli import main
    from asrmerge.workflow.experiment import Experiment

    monkeypatch.chdir(ROOT)
    experiment = Experiment.load(config_path)
    written = {**experiment.table_files(), **{f"{f}.png": experiment.figure_files(f)["png"] for f in experiment.figures}}
    before = {key: Path(path).read_bytes() for key, path in written.items()}
    commands = [["table"]] + [["figure", "--figure", name] for name in experiment.figures]
    for command in commands:
        assert main([*command, "--configfile", str(config_path)]) == 0, command
    changed = [key for key, path in written.items() if Path(path).read_bytes() != before[key]]
    assert not changed, changed
    assert main(["figure", "--figure", "beta_sweep", "--configfile", str(config_path)]) == 2
    assert "not one this config supports" in capsys.readouterr().err
    branch = next(iter(experiment.branches))  # the micro config exports every branch (export_models: all)
    assert main(["export-merge", "--branches", branch, "--out", str(tmp_path / "export"), "--configfile",
                 str(config_path)]) == 0
    by_rule = Path(experiment.export_folder([branch]))
    written = sorted(p.name for p in by_rule.iterdir() if p.name != ".snakemake_timestamp")  # Snakemake's own
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == written
    for name in written:
        assert (tmp_path / "export" / name).read_bytes() == (by_rule / name).read_bytes(), name
    assert main(["export-merge", "--branches", "no_such_branch", "--configfile", str(config_path)]) == 2
    assert "no merge branch 'no_such_branch'" in capsys.readouterr().err


def test_figure_functions_cover_the_plan_and_labels_are_placed_deterministically(world, tmp_path):
    assert set(figures.FIGURES) == set(plan.ALL_FIGURES) == set(plan.FIGURE_KINDS)
    drawn = []
    for attempt in range(2):
        figures.id_vs_ood(world["frame"], tmp_path / f"{attempt}.png")
        drawn.append((tmp_path / f"{attempt}.png").read_bytes())
    assert drawn[0] == drawn[1]
