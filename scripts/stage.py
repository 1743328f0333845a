"""The script of every rule whose work is a declared stage (asrmerge.workflow.stages): the stage's arguments are
read from the job by name (asrmerge.workflow.stage.run_job). In a local run the job is forked from the run's warm
interpreter when it can be (asrmerge.workflow.job_server), which then runs this same script."""
from asrmerge.workflow.job_server import run_on_server

if not run_on_server(snakemake):
    from asrmerge.workflow.stage import run_job

    run_job(snakemake)
