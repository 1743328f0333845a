"""Evaluation (rules select_lambda, decode_model, decode_merged, score): batched decoding, long-form segmentation,
hypothesis files, error counts and significance, and the choice of λ on validation data."""
