"""mergekit's YAML CLI (`mergekit-yaml CONFIG OUT [options]`) with one fix to its Whisper architecture definition.

Run by benchmarks/merge_speed.py with the python of benchmarks/.venvs/mergekit. mergekit 0.1.5 ships a Whisper
definition (mergekit/_data/architectures/whisper.json) whose decoder `weight_prefix` is "model.decoder", without the
trailing dot its encoder prefix has, so it asks for "model.decoderembed_tokens.weight" and stops. This adds the dot
to that definition in memory, then runs the unmodified `mergekit-yaml` entry point (same options, same code path).
"""

import sys

from mergekit.architecture.json_definitions import NAME_TO_ARCH

for arch in NAME_TO_ARCH.get("WhisperForConditionalGeneration", []):
    for name, module in list(arch.modules.items()):
        if module.weight_prefix and not module.weight_prefix.endswith("."):
            arch.modules[name] = module.model_copy(update={"weight_prefix": module.weight_prefix + "."})

from mergekit.scripts.run_yaml import main  # noqa: E402

sys.exit(main())
