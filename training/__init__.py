"""Training package (torch): data, tokenizers, one training loop, recipes and export of seqserve models.

The service never imports this package; the two meet only in exported_models/ (docs/artifact-contract.md).
"""
