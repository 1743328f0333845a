"""Rule table: the per-test-set table and the paper-layout table, from the error counts."""
import json
from pathlib import Path

from asrmerge.report.tables import (
    cer_sets, load_scores, load_utterance_errors, paper_table, system_catalog, write_paper_tables, write_tables,
)
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    params, out = snakemake.params, snakemake.output
    selections = {branch: json.loads(Path(path).read_text()) for branch, path in params.selections.items()}
    unsegmented = cer_sets(params.manifests)
    catalog = system_catalog(list(params.scores), selections)
    frame = load_scores(params.scores, params.roles, unsegmented, catalog)
    errors = load_utterance_errors(params.scores, unsegmented)
    write_tables(frame, out.csv, out.markdown, out.latex, out.wide_csv, out.html, errors, params.reference)
    table, pvalues = paper_table(frame, errors, params.reference)
    write_paper_tables(table, pvalues, params.reference,
                       [out.paper_csv, out.paper_markdown, out.paper_latex, out.paper_html], frame)
