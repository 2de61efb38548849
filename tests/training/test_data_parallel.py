"""Data parallelism without processes: how ranks split batches, epochs and the loss.

The split is a pure function of (rank, world size), so each rank's view can be built here in one
process and compared with the single-process run. tests/training/test_torchrun.py runs the same
code under torchrun for real.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.tiny_models import TRAINABLE_LLAMA_LM
from training.build import build_model, resolve_model_config
from training.distributed import Ranks, micro_batches, rank_rows
from training.optim import THREADS_ENV, configure_threads
from training.recipe import recipe_from_dict
from training.tasks import ClassificationTask, RecurrentLMTask, TransformerLMTask
from training.train import train


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def ranks_of(world_size: int) -> list[Ranks]:
    return [Ranks(rank=rank, world_size=world_size) for rank in range(world_size)]


@pytest.mark.parametrize(("total", "world_size", "micro"), [(8, 2, 0), (7, 3, 0), (5, 2, 2), (9, 4, 1)])
def test_ranks_and_micro_batches_cover_every_row_of_a_global_batch_once(
    total: int, world_size: int, micro: int
) -> None:
    rows = [
        row
        for rank in range(world_size)
        for part in micro_batches(rank_rows(total, rank, world_size), micro)
        for row in part
    ]
    assert rows == list(range(total))
    shares = [len(rank_rows(total, rank, world_size)) for rank in range(world_size)]
    assert max(shares) - min(shares) <= 1
    if micro:
        assert all(
            0 < len(part) <= micro
            for rank in range(world_size)
            for part in micro_batches(rank_rows(total, rank, world_size), micro)
        )


def classification_task(
    ranks: Ranks, examples: int = 20, batch_size: int = 5, **kwargs: Any
) -> ClassificationTask:
    """Example i is the one-token text [i + 1], so a padded batch names its examples."""
    ids = [[index + 1] * (1 + index % 3) for index in range(examples)]
    labels = [index % 2 for index in range(examples)]
    return ClassificationTask(
        ids, labels, ids[:4], labels[:4], batch_size, pad_id=0, seed=7, ranks=ranks, **kwargs
    )


def examples_in(parts: list[Any]) -> list[int]:
    return [int(row[0]) - 1 for (input_ids, _, _), _ in parts for row in input_ids]


@pytest.mark.parametrize("length_buckets", [0, 2])
def test_classifier_shards_see_every_example_exactly_once_per_epoch_and_reshuffle(
    length_buckets: int,
) -> None:
    single = classification_task(Ranks(), length_buckets=length_buckets)
    shards = [classification_task(ranks, length_buckets=length_buckets) for ranks in ranks_of(2)]
    epochs = []
    for _epoch in range(2):
        seen: list[list[int]] = [[], []]
        for _step in range(4):  # 20 examples, global batch 5
            whole = examples_in(single.next_parts())
            mine = [examples_in(task.next_parts()) for task in shards]
            assert mine[0] + mine[1] == whole  # the ranks split exactly the single-process batch
            assert len(mine[0]) in (2, 3) and len(mine[1]) in (2, 3)
            for rank in (0, 1):
                seen[rank] += mine[rank]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(20))
        epochs.append(seen[0] + seen[1])
    assert epochs[0] != epochs[1]  # each epoch has its own order, the same on every rank


def test_language_model_ranks_split_the_same_windows_and_lanes() -> None:
    stream = torch.arange(400) % 23
    common = {"val_tokens": stream[:50], "val_chars": 50, "subset_tokens": 50, "subset_chars": 50}
    single = TransformerLMTask(stream, context_length=8, batch_size=6, seed=3, **common)
    shards = [
        TransformerLMTask(stream, context_length=8, batch_size=6, seed=3, **common, ranks=r)
        for r in ranks_of(2)
    ]
    for _step in range(3):
        (whole_inputs, whole_targets), *_ = single.next_parts()
        parts = [part for task in shards for part in task.next_parts()]
        assert torch.equal(torch.cat([inputs for inputs, _ in parts]), whole_inputs)
        assert torch.equal(torch.cat([targets for _, targets in parts]), whole_targets)
    lanes = [
        RecurrentLMTask(stream, batch_size=4, bptt=5, ranks=r, micro_batch_size=1, **common)
        for r in ranks_of(2)
    ]
    chunks = [[inputs for _, inputs, _ in task.next_parts()] for task in lanes]
    whole = RecurrentLMTask(stream, batch_size=4, bptt=5, **common).next_chunk()[0]
    assert torch.equal(torch.cat(chunks[0] + chunks[1]), whole)  # rank 0 owns lanes 0-1, rank 1 lanes 2-3


def gradient(model: torch.nn.Module, tasks: list[Any]) -> dict[str, torch.Tensor]:
    """The sum of every rank's and micro-batch's gradient: what DDP hands each rank (the loop scales
    each loss by the world size, and DDP divides the summed gradients by it)."""
    model.eval()  # no dropout: the comparison is of the arithmetic, not of random masks
    model.zero_grad()
    for task in tasks:
        for part in task.next_parts():
            task.part_loss(model, part).backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def test_loss_shares_add_up_to_the_single_process_gradient_with_uneven_ranks_and_accumulation() -> None:
    config = resolve_model_config({**TRAINABLE_LLAMA_LM, "kind": "transformer_classifier"}, 40, ["a", "b"])
    model = build_model(config["kind"], config)
    aux = {"aux_lm_weight": 0.5}
    whole = gradient(model, [classification_task(Ranks(), **aux)])
    shards = [classification_task(r, micro_batch_size=1, **aux) for r in ranks_of(2)]  # shares 2 and 3
    split = gradient(model, shards)
    assert whole.keys() == split.keys()
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-7, msg=name)

    lm = build_model(
        "rnn_lm", {"kind": "rnn_lm", "cell": "gru", "vocab_size": 23, "embed_dim": 8, "hidden_size": 8}
    )
    stream = torch.arange(400) % 23
    common = {"val_tokens": stream[:50], "val_chars": 50, "subset_tokens": 50, "subset_chars": 50}
    single = RecurrentLMTask(stream, batch_size=5, bptt=6, **common)
    lanes = [
        RecurrentLMTask(stream, batch_size=5, bptt=6, ranks=r, micro_batch_size=2, **common)
        for r in ranks_of(2)
    ]
    for _step in range(3):  # the carried state must follow each lane across micro-batches too
        whole, split = gradient(lm, [single]), gradient(lm, lanes)
        for name in whole:
            torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-7, msg=name)
    states = [copy.deepcopy(task.state) for task in lanes]
    merged = tuple(torch.cat(layer, dim=1) for layer in zip(*states, strict=True))
    torch.testing.assert_close(merged, single.state)


def test_an_impossible_world_size_fails_before_any_communication(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be " * 50)
    recipe = recipe_from_dict(
        {
            "name": "lm",
            "data": {"path": str(corpus)},
            "tokenizer": {"kind": "char"},
            "model": TRAINABLE_LLAMA_LM,
            "optim": {"batch_size": 2, "max_steps": 1},
        }
    )
    # No process group exists: had train() tried to talk to the other ranks, it would fail otherwise.
    with pytest.raises(ValueError, match="3 ranks cannot share a global batch of 2 rows"):
        train(recipe, tmp_path, ranks=Ranks(rank=0, world_size=3), show_progress=False)
    assert not (tmp_path / "lm").exists()
    with pytest.raises(ValueError, match="3 ranks cannot share a global batch of 2 examples"):
        classification_task(Ranks(rank=1, world_size=3), examples=2, batch_size=8)


def test_threads_per_rank_default_to_the_cores_shared_by_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    cores = os.cpu_count() or 1
    try:
        assert configure_threads(0, 2) == max(1, cores // 2) == torch.get_num_threads()
        assert configure_threads(0, 1) == cores
        assert configure_threads(3, 2) == 3
    finally:
        torch.set_num_threads(1)
