"""asrmerge: merge domain-fine-tuned Whisper models and measure what the merge keeps."""

__version__ = "0.1.0"
