"""The torch side of parity: what each exported graph must reproduce, computed the plainest way.

Transformers are re-run over the whole prefix at every step (no cache to get wrong); recurrent models
carry their state. Test fixtures use the same functions, so engine tests compare against torch itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.models.rnn import RNNLM, RNNClassifier
from training.models.transformer import TransformerClassifier, TransformerLM

LanguageModel = TransformerLM | RNNLM


@torch.no_grad()
def lm_logits(model: LanguageModel, ids: Sequence[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of one row from a fresh start."""
    tokens = torch.tensor([list(ids)], dtype=torch.long)
    out = model(tokens)
    logits = out[0] if isinstance(model, RNNLM) else out
    return logits[0].float().numpy()


@torch.no_grad()
def greedy_with_logits(
    model: LanguageModel, prompt: Sequence[int], n_new: int
) -> tuple[list[int], np.ndarray]:
    """Greedy continuation and the logits [n_new, vocab] each token was chosen from."""
    model.eval()
    chosen: list[np.ndarray] = []
    tokens: list[int] = []
    if isinstance(model, RNNLM):
        logits, state = model(torch.tensor([list(prompt)], dtype=torch.long))
        for _ in range(n_new):
            chosen.append(logits[0, -1].float().numpy())
            tokens.append(int(chosen[-1].argmax()))
            logits, state = model(torch.tensor([[tokens[-1]]], dtype=torch.long), state)
    else:
        sequence = list(prompt)
        for _ in range(n_new):
            chosen.append(lm_logits(model, sequence)[-1])
            tokens.append(int(chosen[-1].argmax()))
            sequence.append(tokens[-1])
    return tokens, np.stack(chosen) if chosen else np.zeros((0, 0), np.float32)


def greedy(model: LanguageModel, prompt: Sequence[int], n_new: int) -> list[int]:
    """Greedy token ids after `prompt` (the prompt itself not included)."""
    return greedy_with_logits(model, prompt, n_new)[0]


@torch.no_grad()
def classifier_probabilities(
    model: TransformerClassifier | RNNClassifier, input_ids: np.ndarray, attention_mask: np.ndarray
) -> np.ndarray:
    """Softmax over labels [batch, num_labels] for a right-padded batch."""
    model.eval()
    out = model(torch.from_numpy(input_ids).long(), torch.from_numpy(attention_mask).long())
    logits = out[0] if isinstance(model, TransformerClassifier) else out
    return torch.softmax(logits.float(), dim=-1).numpy()
