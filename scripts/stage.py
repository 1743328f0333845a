"""The script of every rule whose work is a declared stage (asrmerge.workflow.stages): the stage's arguments are
read from the job by name (asrmerge.workflow.stage.run_job)."""
from asrmerge.workflow.stage import run_job

run_job(snakemake)
