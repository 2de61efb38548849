"""Start a classifier from a pretrained language-model run (GPT-1 / ULMFiT transfer).

With no pretrained word vectors available, in-domain LM pre-training is what lifts a sentiment
classifier above random initialisation; this is where the LM's weights enter the classifier.
A Transformer classifier wraps the LM whole (`model.lm`). A recurrent classifier takes the LM's
embedding and its stacked layers as the forward stack; its head (and a backward stack, if any)
start fresh, since a forward LM has nothing to offer them.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from training.checkpoint import WEIGHTS_FILE, load_weights
from training.models.rnn import RNNClassifier
from training.models.transformer import TransformerClassifier


def recurrent_lm_weights_for_classifier(lm_state: dict, classifier: RNNClassifier) -> dict:
    """The classifier's names for an RNN LM's weights: `layers.{i}` becomes `forward_layers.{i}`."""
    own = classifier.state_dict()
    mapped = {}
    for name, tensor in lm_state.items():
        if name.startswith("head."):
            continue  # next-token head: the classifier has its own
        target = "forward_" + name if name.startswith("layers.") else name
        if target not in own:
            raise ValueError(f"pretrained weight {name} has no place in the classifier")
        if own[target].shape != tensor.shape:
            shapes = f"pretrained {tuple(tensor.shape)}, classifier {tuple(own[target].shape)}"
            raise ValueError(f"{name}: {shapes}")
        mapped[target] = tensor
    return mapped


def load_pretrained(model: nn.Module, lm_run: Path) -> nn.Module:
    """Copy the LM run's best weights (its model.safetensors) into `model`; return it."""
    path = Path(lm_run) / WEIGHTS_FILE
    if isinstance(model, TransformerClassifier):
        load_weights(model.lm, path)
        return model
    if isinstance(model, RNNClassifier):
        mapped = recurrent_lm_weights_for_classifier(load_file(str(path)), model)
        missing = {"embedding.weight"} | {n for n in model.state_dict() if n.startswith("forward_layers.")}
        if not missing <= mapped.keys():
            raise ValueError(f"{path} lacks {sorted(missing - mapped.keys())}")
        model.load_state_dict(mapped, strict=False)
        return model
    raise TypeError(f"cannot start a {type(model).__name__} from a pretrained LM")
