"""Rule figure: draw one figure (its name is the wildcard) from the cached files asrmerge.report.plan names."""
import pandas as pd

from asrmerge.report.figures import FIGURES
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    outputs = (snakemake.output.png, snakemake.output.pdf)
    kind, draw = FIGURES[snakemake.wildcards.figure]
    branches = snakemake.params.branches
    if kind == "table":
        draw(pd.read_csv(snakemake.input.table), *outputs)
    elif kind == "sweep":
        draw(pd.read_csv(snakemake.input.table), branches, *outputs)
    elif kind == "selections":
        draw(snakemake.params.branch_files, *outputs)
    else:
        draw(snakemake.params.branch_files, snakemake.params.layer, *outputs)
