"""RegMean and Fisher merging: asrmerge against FusionBench 0.2.33 on the same checkpoints and statistics.

Run on purpose, not in the tests (they check independent re-implementations, tests/test_data_aware.py):

    .venv/bin/python benchmarks/data_aware_agreement.py [--work .bench/data-aware] [--tolerance 1e-5]

1. The virtual environment benchmarks/.venvs/fusionbench (pinned fusion-bench, made by benchmarks/merge_speed.py's
   `ensure_venv` on first use).
2. A small Whisper (transformers config; 2 + 2 layers, d_model 64) with random weights as the base, three
   "fine-tunes" θ_t = θ₀ + τ_t, and per task the statistics asrmerge's merges read: Gram matrices XᵀX/n of random
   inputs with unequal feature scales for every linear layer, and non-negative Fisher entries for every parameter,
   written as asrmerge statistics files (kind "statistics").
3. asrmerge's `merge` (the engine, with its statistics checks and the Fisher pre-pass) for RegMean at α 1.0, 0.9,
   0.5 and Fisher merging with and without normalisation, and, in the FusionBench environment, its
   `merging_with_regmean_weights` and `merging_with_fisher_weights` on the same θ_t and statistics (see
   `fusionbench_side`; FusionBench computes the statistics inside its algorithms from a data loader, so the
   comparison starts from the statistics).
4. The maximum absolute difference of the merged weights θ per case; exit status 1 when one exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

CASES = [("regmean", {"alpha": 1.0}), ("regmean", {"alpha": 0.9}), ("regmean", {"alpha": 0.5}),
         ("fisher", {"normalize": True}), ("fisher", {"normalize": False})]
GEOMETRY = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=300, num_mel_bins=80, max_source_positions=100,
                max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                suppress_tokens=None, begin_suppress_tokens=None)
TASKS = 3


def fusionbench_side(spec_path: str) -> None:
    """In the FusionBench environment: merge with its functions, write the merged θ (safetensors)."""
    import torch
    from safetensors.torch import load_file, save_file
    from fusion_bench.method.fisher_merging.fisher_merging import merging_with_fisher_weights
    from fusion_bench.method.regmean.regmean import merging_with_regmean_weights

    spec = json.loads(Path(spec_path).read_text())
    thetas = [load_file(p) for p in spec["finetuned"]]
    params = {name: [theta[name] for theta in thetas] for name in thetas[0]}
    for case in spec["cases"]:
        statistics = [load_file(p) for p in case["statistics"]]
        if case["method"] == "regmean":  # keyed by module name, as its hooks record them
            weights = [{name.removesuffix(".weight"): g for name, g in stats.items()} for stats in statistics]
            merged = merging_with_regmean_weights(params, weights, reduce_non_diagonal_ratio=case["params"]["alpha"])
        else:  # its Fisher covers the parameters it merges: those with statistics
            covered = {name: values for name, values in params.items() if name in statistics[0]}
            merged = merging_with_fisher_weights(covered, statistics, torch.ones(len(thetas)) / len(thetas),
                                                 normalize_fisher_weight=case["params"]["normalize"],
                                                 minimal_fisher_weight=1e-6)
        save_file({k: v.contiguous() for k, v in merged.items()}, case["out"])


def build_inputs(work: Path) -> tuple[Path, list[Path], list[Path], dict[str, list[Path]]]:
    """The base folder, the fine-tuned weight files, their task vectors and statistics files per kind."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from asrmerge.layout import MODEL_WEIGHTS
    from asrmerge.merging import compute_task_vector
    from asrmerge.merging.checkpoint import save_tensors
    from asrmerge.merging.spec import STATISTICS_FILE_KIND

    torch.manual_seed(0)
    base = work / "base"
    WhisperForConditionalGeneration(WhisperConfig(**GEOMETRY)).save_pretrained(base)
    theta0 = load_file(str(base / MODEL_WEIGHTS))
    generator = torch.Generator().manual_seed(1)
    finetuned, task_vectors, statistics = [], [], {"gram": [], "fisher": []}
    for task in range(TASKS):
        theta = {name: (t + 0.02 * torch.randn(t.shape, generator=generator) if "encoder.embed_positions" not in name
                        else t.clone()) for name, t in theta0.items()}
        path = work / f"finetuned{task}.safetensors"
        save_file(theta, str(path), metadata={"format": "pt"})
        finetuned.append(path)
        task_vectors.append(compute_task_vector(base / MODEL_WEIGHTS, path, work / f"tau{task}.safetensors"))
        grams = {}
        for name, t in theta0.items():
            if t.ndim == 2 and "embed" not in name:
                x = torch.randn(200, t.shape[1], generator=generator) * torch.rand(t.shape[1], generator=generator)
                grams[name] = x.T @ x / 200
        fisher = {name: torch.rand(t.shape, generator=generator) ** 4 for name, t in theta0.items()
                  if "encoder.embed_positions" not in name}
        for kind, tensors in (("gram", grams), ("fisher", fisher)):
            statistics[kind].append(save_tensors(work / f"{kind}{task}.safetensors", tensors,
                                                 {"format": "pt", "kind": STATISTICS_FILE_KIND, "statistics": kind}))
    return base, finetuned, task_vectors, statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "data-aware")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--fusionbench-side", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fusionbench_side:
        fusionbench_side(args.fusionbench_side)
        return

    import torch
    from safetensors.torch import load_file

    from asrmerge.layout import MODEL_WEIGHTS
    from asrmerge.merging import merge
    from merge_speed import ensure_venv

    python = ensure_venv("fusionbench")
    args.work.mkdir(parents=True, exist_ok=True)
    base, finetuned, task_vectors, statistics = build_inputs(args.work)
    cases = []
    for i, (method, params) in enumerate(CASES):
        kind = "gram" if method == "regmean" else "fisher"
        ours = merge(base, task_vectors=task_vectors, method=method, params=params, statistics=statistics[kind],
                     out_path=args.work / f"ours{i}.safetensors")
        cases.append({"method": method, "params": params, "statistics": [str(p) for p in statistics[kind]],
                      "ours": str(ours), "out": str(args.work / f"fusionbench{i}.safetensors")})
    spec = args.work / "spec.json"
    spec.write_text(json.dumps({"finetuned": [str(p) for p in finetuned], "cases": cases}))
    subprocess.run([str(python), __file__, "--fusionbench-side", str(spec)], check=True, cwd=ROOT)

    theta0 = load_file(str(base / MODEL_WEIGHTS))
    thetas = [load_file(str(p)) for p in finetuned]
    print("| method | parameters | tensors compared | max abs difference of θ | within tolerance |")
    print("|---|---|---:|---:|---|")
    worst = 0.0
    for case in cases:
        ours, theirs = load_file(case["ours"]), load_file(case["out"])
        diff = 0.0
        for name, tau in ours.items():
            # FusionBench leaves out of its merged dict what it does not merge; its model keeps θ₀ there, while
            # asrmerge averages (the τ of every task is 0 there in this case: frozen positions).
            want = theirs.get(name, sum(t[name] for t in thetas) / len(thetas))
            diff = max(diff, float((theta0[name].double() + tau.double() - want.double()).abs().max()))
        worst = max(worst, diff)
        print(f"| {case['method']} | {json.dumps(case['params'])} | {len(ours)} | {diff:.2e} | "
              f"{'yes' if diff <= args.tolerance else 'NO'} |")
    print(f"\nworst {worst:.2e} (tolerance {args.tolerance:g}); torch {torch.__version__}; inputs in {args.work}")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
