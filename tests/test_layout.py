"""The results layout: templates fill what is given and leave Snakemake wildcards, system ids round-trip."""
import json

import pytest

from asrmerge import layout


def test_path_fills_given_fields_and_keeps_the_others_as_wildcards():
    assert layout.path("results/demo", layout.SELECTION, branch=layout.BRANCH) == "results/demo/selection/{method}/{params}.json"
    assert layout.path("R", layout.HYPOTHESES, system=layout.merged_system("ties/density=0.2"), test_set="news") == \
        "R/hypotheses/merged/ties/density=0.2/news.jsonl"
    assert layout.path("R", layout.MODEL, model=layout.finetuned_system("{domain}")) == "R/models/finetuned/{domain}"


@pytest.mark.parametrize("system,parts", [
    ("base", ("base", "", "")),
    ("joint", ("joint", "", "")),
    (layout.finetuned_system("news"), ("finetuned", "news", "")),
    (layout.merged_system("boosted_tsv_m/beta=0.3+orthogonaliser=svd"),
     ("merged", "boosted_tsv_m", "beta=0.3+orthogonaliser=svd")),
])
def test_system_ids_split_into_kind_name_and_params(system, parts):
    assert layout.split_system(system) == parts
    assert layout.is_finetuned(system) == (parts[0] == layout.FINETUNED)


def test_selection_record_lambda_is_read_by_its_key(tmp_path):
    record = tmp_path / "selection.json"
    record.write_text(json.dumps({layout.CHOSEN_LAMBDA: 0.7, "curve": []}))
    assert layout.read_chosen_lambda(record) == 0.7
