"""Rule table: the per-test-set table and the paper-layout table, from the error counts."""
import json

from asrmerge.report.tables import (
    cer_sets, load_scores, load_utterance_errors, paper_table, system_catalog, write_paper_tables, write_tables,
)
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    params, out = snakemake.params, snakemake.output
    score_files = dict(zip(params.systems, snakemake.input.scores))
    selections = {b: json.loads(open(p).read()) for b, p in zip(params.branches, snakemake.input.selections)}
    unsegmented = cer_sets(dict(zip(params.test_sets, snakemake.input.manifests)))
    catalog = system_catalog(params.systems, selections)
    frame = load_scores(score_files, params.roles, unsegmented, catalog)
    errors = load_utterance_errors(score_files, unsegmented)
    write_tables(frame, out.csv, out.markdown, out.latex, out.wide_csv, out.html, errors, params.reference)
    table, pvalues = paper_table(frame, errors, params.reference)
    write_paper_tables(table, pvalues, params.reference,
                       [out.paper_csv, out.paper_markdown, out.paper_latex, out.paper_html], frame)
