"""Merge-method implementations, one module per family; each declares its methods (asrmerge.merging.spec) and
asrmerge.merging.registry collects them."""
