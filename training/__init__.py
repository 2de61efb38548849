"""Training package (torch): data, tokenizers, one training loop, recipes and export of seqserve models.

The service never imports this package; the two meet in exported_models/ (docs/artifact-contract.md), and
training cuts classifier inputs with the service's own functions (long_documents.py).
"""
