"""ONNX export with parity checks, the artifact manifest, and the Hugging Face export.

`export_run` turns a training run folder into `exported_models/<name>/`; `export_model` does the same
for a model in memory (test fixtures use it). `export_hf` writes a transformers-loadable folder.
"""

from training.export.artifact import export_model
from training.export.hf import export_hf
from training.export.parity import ParityError
from training.export.run import export_run

__all__ = ["ParityError", "export_hf", "export_model", "export_run"]
