"""Rule table: the per-test-set table and the paper-layout table, from the error counts."""
from asrmerge.report.tables import (
    load_scores, load_utterance_errors, paper_table, write_paper_tables, write_tables,
)
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    score_files = dict(zip(snakemake.params.systems, snakemake.input))
    frame = load_scores(score_files, snakemake.params.roles)
    write_tables(frame, snakemake.output.csv, snakemake.output.markdown)
    reference = snakemake.params.reference
    table, pvalues = paper_table(frame, load_utterance_errors(score_files), reference)
    write_paper_tables(table, pvalues, reference,
                       [snakemake.output.paper_csv, snakemake.output.paper_markdown, snakemake.output.paper_latex])
