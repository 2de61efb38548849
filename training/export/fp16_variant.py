"""The CUDA variant of a decoder: float16 compute and a float16 KV cache, float32 logits.

Why: onnxruntime's CUDA GroupQueryAttention takes float16 or bfloat16 activations only, so a float32
graph would run its attention on the CPU under the CUDA provider, with the cache crossing PCIe at every
step. onnxruntime.transformers' float16 converter turns every float32 initializer and activation into
float16; the logits are kept float32 (one Cast at the end) so the host samples the same way for every
variant. ORT's CPU kernels run this graph too (GQA included), which is how its parity is checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.transformers.float16 import convert_float_to_float16

from training.export import parity
from training.export import torch_reference as ref
from training.export.graph_scoring import greedy_agreement, greedy_tokens
from training.models.transformer import TransformerLM

FLOAT16_FILE = "model.fp16.onnx"
# Float16 rounds each activation to ~3 decimal digits; over 4 blocks the logits of the committed
# model move by ~0.01-0.02 (measured), so 0.1 leaves room without hiding a wrong graph (those are off by 1+).
FLOAT16_TOLERANCE = 0.1


def float16_graph(graph: onnx.ModelProto) -> onnx.ModelProto:
    """A float32-cache decoder converted to float16 everywhere but its int64 inputs and the logits."""
    return convert_float_to_float16(graph, keep_io_types=["logits"], disable_shape_infer=True)


def float16_parity(
    model: TransformerLM,
    session: ort.InferenceSession,
    prompts: Sequence[Sequence[int]],
    n_new: int,
    tolerance: float = FLOAT16_TOLERANCE,
) -> dict[str, Any]:
    """The manifest's `variants.cuda.parity`: the export's parity cases against torch float32 at
    `tolerance`, and the first greedy divergence from torch over a fixed prompt set."""
    diffs = parity.check_decoder(model, session, tolerance=tolerance)
    theirs = [ref.greedy(model, prompt, n_new) for prompt in prompts]
    ours = greedy_tokens(session, prompts, n_new)
    return {
        "reference": "torch float32",
        "max_abs_logit_diff": float(np.float32(max(diffs.values()))),
        "tolerance": tolerance,
        "cases": {case: float(np.float32(diff)) for case, diff in diffs.items()},
        "greedy": greedy_agreement(ours, theirs),
    }
