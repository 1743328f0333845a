"""The workflow around the stages: config validation, one config's run and its files (experiment), the stages as
functions of paths (stages) and as commands (commands), and the glue of the rule scripts (jobs)."""
