"""`asrmerge compare-runs`: two results folders compared file by file, each folder's own path ignored."""

import hashlib
import json

import torch
from safetensors.torch import save_file

from asrmerge.cli import main
from asrmerge.workflow.compare import compare_runs


def fake_run(root, tau: torch.Tensor, hypothesis: str, log: str):
    (root / "merges" / "ta").mkdir(parents=True)
    # metadata keys in another order per run, an absolute input path in the metadata and in a record
    metadata = {"base": str(root / "models" / "base"), "kind": "task_vector"}
    if log == "second":
        metadata = dict(reversed(list(metadata.items())))
    save_file({"w": tau}, str(root / "merges" / "ta" / "task_vector.safetensors"), metadata=metadata)
    (root / "merges" / "ta" / "selection.json").write_text(json.dumps({"task_vector": str(root / "merges" / "ta")}))
    # a record with the digest of a file whose metadata names the folder: it differs between folders
    digest = hashlib.sha256((root / "merges" / "ta" / "task_vector.safetensors").read_bytes()).hexdigest()
    (root / "merges" / "ta" / "merge_info.json").write_text(json.dumps({"lambda": 1.0, "sha256": {"tv": digest}}))
    save_file({"w": tau}, str(root / "merges" / "ta" / "model.safetensors"), metadata={"task_vector_sha256": digest})
    (root / "hypotheses").mkdir()
    (root / "hypotheses" / "news.jsonl").write_text(json.dumps({"id": "u1", "hypothesis": hypothesis}) + "\n")
    for records in ("logs", "benchmarks"):
        (root / records).mkdir()
        (root / records / "job.txt").write_text(log)
    (root / ".asrmerge-digests.json").write_text(json.dumps({"audio.wav": [10, log, "digest"]}))  # inode, time
    return root


def test_the_same_run_in_two_folders_compares_equal(tmp_path, capsys):
    tau = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    first = fake_run(tmp_path / "a" / "results", tau, "o tempo", "first")
    second = fake_run(tmp_path / "b" / "results", tau.clone(), "o tempo", "second")
    comparison = compare_runs(first, second)
    assert comparison.equal and len(comparison.identical) == 5  # logs/ and benchmarks/ are not compared
    assert main(["compare-runs", str(first), str(second)]) == 0
    assert "5 identical file(s), 0 different" in capsys.readouterr().out


def test_a_record_that_differs_beside_its_digests_is_named(tmp_path):
    tau = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    first = fake_run(tmp_path / "a", tau, "o tempo", "first")
    second = fake_run(tmp_path / "b", tau.clone(), "o tempo", "second")
    info = second / "merges" / "ta" / "merge_info.json"
    info.write_text(info.read_text().replace("1.0", "0.5"))
    assert compare_runs(first, second).different == ["merges/ta/merge_info.json"]


def test_a_changed_tensor_a_changed_hypothesis_and_a_missing_file_are_named(tmp_path, capsys):
    tau = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    first = fake_run(tmp_path / "a", tau, "o tempo", "first")
    changed = tau.clone()
    changed[1, 2] = torch.nextafter(changed[1, 2], torch.tensor(100.0))  # one bit
    second = fake_run(tmp_path / "b", changed, "o templo", "second")
    (second / "merges" / "ta" / "selection.json").unlink()
    (second / "extra.json").write_text("{}")
    comparison = compare_runs(first, second)
    assert comparison.different == ["hypotheses/news.jsonl", "merges/ta/model.safetensors",
                                    "merges/ta/task_vector.safetensors"]
    assert comparison.only_first == ["merges/ta/selection.json"] and comparison.only_second == ["extra.json"]
    assert main(["compare-runs", str(first), str(second)]) == 1
    out = capsys.readouterr().out
    assert "different: merges/ta/task_vector.safetensors" in out and "only in the first: merges/ta/selection.json" in out
    assert main(["compare-runs", str(first), str(tmp_path / "missing")]) == 2
