"""Whisper models: building, loading, training and importing checkpoints."""
