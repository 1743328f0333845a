"""Rule figure: draw one figure (its name is the wildcard) from the cached files asrmerge.workflow.figure_plan names."""
from asrmerge.report.figures import draw_figure
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    params = snakemake.params
    draw_figure(
        snakemake.wildcards.figure, (snakemake.output.png, snakemake.output.pdf),
        table=snakemake.input.get("table"), branches=params.branches, branch_files=params.branch_files,
        layer=params.layer,
    )
