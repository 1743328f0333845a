"""Rule figure: draw one figure (its name is the wildcard) from the table or the selection curves."""
import pandas as pd

from asrmerge.report.figures import SELECTION_FIGURES, TABLE_FIGURES
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    outputs = (snakemake.output.png, snakemake.output.pdf)
    name = snakemake.wildcards.figure
    if name in TABLE_FIGURES:
        TABLE_FIGURES[name](pd.read_csv(snakemake.input.table), *outputs)
    else:
        SELECTION_FIGURES[name](dict(zip(snakemake.params.branches, snakemake.input.selections)), *outputs)
