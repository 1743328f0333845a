"""Tables and figures built from the workflow's error counts."""
