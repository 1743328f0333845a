"""Rule score: error counts of one system on every test set."""
from asrmerge.atomic import write_json
from asrmerge.hypotheses import read_jsonl
from asrmerge.scoring import counts_to_dict, score_hypotheses
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    scores = {}
    for test_set, path in snakemake.params.hypotheses.items():
        rows = read_jsonl(path)
        total, per_utterance = score_hypotheses(rows)
        scores[test_set] = {
            "total": counts_to_dict(total),
            "utterances": {row["id"]: counts_to_dict(c) for row, c in zip(rows, per_utterance)},
        }
    write_json(snakemake.output[0], scores)
