"""The model card (layout.MODEL_CARD, README.md) of an exported merge, as the Hugging Face Hub reads one: a YAML metadata block
(base_model, tags with `merge` and the method, pipeline_tag, languages, and a model-index with this run's error rate
on every test set) and a short text: what was merged, how λ was chosen, the results, how to load and rebuild it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asrmerge.evaluation.scoring import counts_from_dict


@dataclass(frozen=True)
class TestResult:
    test_set: str
    role: str
    metric: str  # wer | cer
    value: float  # percent
    utterances: int
    dataset: Mapping[str, Any] | None = None  # a dataset-backed set's `dataset:` entry (path, name, ...)


def test_results(score_file: str | Path, roles: Mapping[str, str], cer: Sequence[str],
                 datasets: Mapping[str, Mapping[str, Any]]) -> list[TestResult]:
    """One result per test set of a score file (`scores/{system}.json`), in the metric its tables use."""
    results = []
    for test_set, entry in json.loads(Path(score_file).read_text(encoding="utf-8")).items():
        counts = counts_from_dict(entry["total"])
        metric = "cer" if test_set in cer else "wer"
        results.append(TestResult(test_set, roles[test_set], metric, round(100 * getattr(counts, metric), 2),
                                  len(entry["utterances"]), datasets.get(test_set)))
    return results


def _model_index(name: str, results: Sequence[TestResult]) -> list[dict[str, Any]]:
    entries = []
    for result in results:
        dataset = {"name": result.test_set, "type": result.test_set, "split": "test"}
        if result.dataset:
            dataset.update(type=result.dataset["path"], **({"config": result.dataset["name"]}
                                                           if result.dataset.get("name") else {}))
        entries.append({"task": {"type": "automatic-speech-recognition", "name": "Automatic Speech Recognition"},
                        "dataset": dataset,
                        "metrics": [{"type": result.metric, "value": result.value, "name": result.metric.upper()}]})
    return [{"name": name, "results": entries}]


def model_card(*, name: str, method: str, params: Mapping[str, Any], lam: float, base_model: str, hub_base: bool,
               domains: Sequence[str], languages: Sequence[str], results: Sequence[TestResult],
               recipe_name: str) -> str:
    """README.md of a merged model folder."""
    metadata = {
        **({"base_model": base_model} if hub_base else {}),
        "library_name": "transformers",
        "pipeline_tag": "automatic-speech-recognition",
        "language": sorted(set(languages)),
        "tags": ["merge", "model-merging", method, "whisper", "asrmerge"],
        "model-index": _model_index(name, results),
    }
    settings = ", ".join(f"{key}={value}" for key, value in params.items()) or "its defaults"
    rows = "\n".join(f"| {r.test_set} | {r.role} | {r.metric.upper()} | {r.value:.2f} | {r.utterances} |"
                     for r in results)
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).rstrip()}
---

# {name}

One Whisper model merged from {len(domains)} domain fine-tunes of `{base_model}` ({", ".join(domains)}) with
**{method}** ({settings}), scaled by **λ = {lam:g}**, the value with the lowest error rate on the domains' validation
splits (test splits never enter the choice). Built by the asrmerge workflow.

## Results (test splits; error rates in %)

| test set | role | metric | error rate | utterances |
|---|---|---|---|---|
{rows}

Floating-point kernels differ across CPU types and GPUs: rebuilt elsewhere, the weights can differ in the last bits.

## Use

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="path/to/this/folder")
print(asr("audio.wav")["text"])
```

## Rebuild

`{recipe_name}` holds the method, its parameters, λ, the merge settings and the SHA-256 of every input (base
weights, task vectors, statistics). From the folder the workflow ran in:

```bash
asrmerge merge --recipe path/to/this/folder/{recipe_name} --out-model rebuilt
```

writes the same model.safetensors, after checking that every input is still the one the recipe names.
"""


def export_merge(candidates: Mapping[str, Mapping[str, Any]], base: str, task_vectors: Sequence[str],
                 settings: Mapping[str, Any], selection_metric: str, card: Mapping[str, Any], out_dir: str) -> Path:
    """Rules export_merged and export_best_merge: the branch of `candidates` (branch id -> method, params, merged task
    vector, selection record, score file, statistics files) with the lowest validation error, as a model folder at
    its chosen λ, with its model card and its recipe (asrmerge.merging.recipe). `settings`: the merge job's seed,
    device, svd_dtype, exclude_from_svd; `card`: name (of the run: the branch follows it), base_model, hub_base, domains, languages, roles, manifests
    and metrics of the test sets (asrmerge.report.tables.cer_sets), datasets (set -> `dataset:` entry)."""
    from asrmerge.evaluation.selection import best_branch
    from asrmerge.layout import MERGE_RECIPE, MODEL_CARD, chosen_lambda
    from asrmerge.merging.engine import export_merged_model
    from asrmerge.merging.recipe import make_recipe, recipe_text
    from asrmerge.report.tables import cer_sets

    records = {branch: json.loads(Path(files["selection"]).read_text()) for branch, files in candidates.items()}
    chosen = best_branch(records, selection_metric)
    files, lam = candidates[chosen], chosen_lambda(records[chosen])
    recipe = make_recipe(method=files["method"], params=files["params"], lam=lam, base=base, task_vectors=task_vectors,
                         statistics=files["statistics"], branch=chosen, **settings)
    text = model_card(name=f"{card['name']}-{chosen.replace('/', '-')}", method=files["method"], params=files["params"], lam=lam,
                      base_model=card["base_model"], hub_base=card["hub_base"], domains=card["domains"],
                      languages=card["languages"], recipe_name=MERGE_RECIPE,
                      results=test_results(files["scores"], card["roles"], cer_sets(card["manifests"], card["metrics"]),
                                           card["datasets"]))
    return export_merged_model(base, files["task_vector"], lam, out_dir,
                               provenance={"branch": chosen, "method": files["method"], "params": files["params"],
                                           "selection": files["selection"]},
                               extra_files={MODEL_CARD: text, MERGE_RECIPE: recipe_text(recipe)})
