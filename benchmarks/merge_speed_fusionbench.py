"""Run one FusionBench merge algorithm on Whisper checkpoints: `python merge_speed_fusionbench.py SPEC.json`.

Run by benchmarks/merge_speed.py with the python of benchmarks/.venvs/fusionbench. FusionBench has no Whisper model
pool, so the pool is its generic `BaseModelPool` whose entries instantiate
`transformers.WhisperForConditionalGeneration.from_pretrained(folder)` when the algorithm loads them (the pattern of
its own Hugging Face pools). The algorithm class (from `fusion_bench.method`) runs unchanged; the merged model is
written with `save_pretrained`.

SPEC: {"algorithm": class name, "kwargs": {...}, "base": folder, "finetuned": [folders], "out": folder}
"""

import json
import sys

import torch


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    import fusion_bench.method as methods
    from fusion_bench.modelpool import BaseModelPool

    def entry(folder: str) -> dict:
        # float32 whatever the checkpoints store: transformers 5 loads float16 checkpoints in float16, in which
        # FusionBench's SVD methods cannot run on a CPU (torch has no half-precision SVD there); asrmerge computes in
        # float32 too.
        return {"_target_": "transformers.WhisperForConditionalGeneration.from_pretrained",
                "pretrained_model_name_or_path": folder, "dtype": "float32"}

    models = {"_pretrained_": entry(spec["base"])}
    models.update({f"task{i:02d}": entry(folder) for i, folder in enumerate(spec["finetuned"])})
    algorithm = getattr(methods, spec["algorithm"])(**spec["kwargs"])
    with torch.no_grad():
        merged = algorithm.run(BaseModelPool(models))
    if isinstance(merged, dict):  # some algorithms return {"merged": model, ...}
        merged = merged.get("merged", merged.get("model"))
    merged.save_pretrained(spec["out"])


if __name__ == "__main__":
    main()
