"""Rule figure: WER per system and test group."""
import pandas as pd

from asrmerge.report.figures import wer_by_system
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    wer_by_system(pd.read_csv(snakemake.input[0]), snakemake.output.png, snakemake.output.pdf)
