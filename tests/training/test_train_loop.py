"""The one training loop: schedule, TBPTT, nats/char, overfitting, resume, budgets, classifiers, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from harness.tiny_models import MODEL_SECTIONS, TRAINABLE_LLAMA_LM
from training.__main__ import main, read_defaults
from training.build import build_model, load_run_model, resolve_model_config
from training.evaluate import evaluate_run
from training.metrics import rnn_stream_nats, transformer_stream_nats
from training.optim import no_decay_parameters
from training.recipe import Recipe, load_recipe, recipe_from_dict, recipe_to_toml
from training.schedule import StepBudget, lr_at
from training.tasks import RecurrentLMTask, TransformerLMTask
from training.tasks.classification import auxiliary_lm_loss
from training.train import train

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30
TINY_GPT = TRAINABLE_LLAMA_LM
TINY_LSTM = MODEL_SECTIONS["lstm"]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def lm_recipe(tmp_path: Path, model: dict[str, Any], name: str = "run", **optim: Any) -> Recipe:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    settings = {
        "lr": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 10,
        "max_steps": 100,
        "batch_size": 8,
        "eval_every": 50,
        "threads": 1,
        **optim,
    }
    return recipe_from_dict(
        {
            "name": name,
            "data": {"path": str(corpus)},
            "tokenizer": {"kind": "char"},
            "model": model,
            "optim": settings,
            "task": {"bptt": 32},
        }
    )


class FixedDistribution(nn.Module):
    """Predicts the same next-token distribution everywhere: makes the expected loss a hand sum."""

    def __init__(self, probabilities: list[float]) -> None:
        super().__init__()
        self.log_probs = torch.tensor(probabilities).log()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.log_probs.expand(*input_ids.shape, -1)


def test_lr_warms_up_linearly_then_decays_by_cosine_to_min_lr() -> None:
    lrs = [lr_at(step, 110, 1e-3, 1e-4, 10) for step in range(120)]
    assert lrs[:10] == pytest.approx([1e-4 * (k + 1) for k in range(10)])
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way through the decay
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[110] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)


def test_step_budget_sizes_the_horizon_from_the_measured_pace() -> None:
    budget = StepBudget(max_steps=10_000, max_seconds=100.0)
    assert budget.horizon(0, 0.0) == 10_000
    assert budget.horizon(10, 5.0) == 200  # 0.5 s/step, 95 s left -> 190 more steps
    assert StepBudget(max_steps=50, max_seconds=100.0).horizon(10, 5.0) == 50
    assert budget.finished(11, 100.0) and not budget.finished(11, 99.0)


def test_nats_per_char_is_total_cross_entropy_over_characters_by_hand() -> None:
    # p = (1/2, 1/4, 1/4); targets after the first token are 0, 1, 2: ln 2 + ln 4 + ln 4 = 5 ln 2.
    model = FixedDistribution([0.5, 0.25, 0.25])
    tokens = torch.tensor([0, 0, 1, 2])
    task = TransformerLMTask(
        tokens, tokens, val_chars=6, context_length=2, batch_size=1, seed=0, subset_tokens=4, subset_chars=6
    )
    result = task.evaluate(model, full=True)
    assert result["val_nats_per_char"] == pytest.approx(5 * math.log(2) / 6)
    assert result["val_nats_per_token"] == pytest.approx(5 * math.log(2) / 3)


@pytest.mark.parametrize("context_length", [1, 3, 4, 10])
def test_windowed_transformer_eval_scores_every_token_but_the_first_once(context_length: int) -> None:
    model = FixedDistribution([0.1] * 10)
    nats, predicted = transformer_stream_nats(model, torch.arange(10), context_length, batch_size=2)
    assert predicted == 9 and nats == pytest.approx(9 * math.log(10))


def test_rnn_eval_runs_the_whole_stream_in_chunks_with_carried_state() -> None:
    model = build_model("rnn_lm", {**TINY_LSTM, "vocab_size": 7})
    tokens = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(0))
    chunked = rnn_stream_nats(model, tokens, chunk=8)
    whole = rnn_stream_nats(model, tokens, chunk=1000)
    assert chunked[1] == whole[1] == 49
    assert chunked[0] == pytest.approx(whole[0], rel=1e-5)


def test_tbptt_lanes_are_contiguous_and_the_state_is_carried_detached() -> None:
    model = build_model("rnn_lm", {**TINY_LSTM, "vocab_size": 11})
    stream = torch.arange(1, 41) % 11
    task = RecurrentLMTask(
        stream, stream, val_chars=40, batch_size=2, bptt=5, subset_tokens=40, subset_chars=40
    )
    assert torch.equal(task.lanes, stream.view(2, 20))
    task.next_chunk()
    second_inputs, _ = task.next_chunk()
    assert torch.equal(second_inputs[:, 0], task.lanes[:, 5])  # the next chunk follows on in each lane
    task.position = 0
    task.part_loss(model, task.next_parts()[0])
    carried = task.state
    assert carried is not None and not any(s.requires_grad for s in carried)
    carried_loss = task.part_loss(model, task.next_parts()[0])
    inputs, targets = task.lanes[:, 5:10], task.lanes[:, 6:11]
    zero_state_loss = nn.functional.cross_entropy(model(inputs)[0].flatten(0, 1), targets.flatten())
    assert carried_loss.item() != pytest.approx(zero_state_loss.item(), abs=1e-6)


def test_tbptt_training_on_a_repeated_text_drives_the_loss_down(tmp_path: Path) -> None:
    metrics = train(lm_recipe(tmp_path, TINY_LSTM, max_steps=120), tmp_path / "runs", show_progress=False)
    losses = [row["loss"] for row in metrics["history"]]
    assert losses[-1] < 0.4 * losses[0]
    assert metrics["val_nats_per_char"] < 1.0


def test_transformer_overfits_a_tiny_text_and_writes_a_complete_run(tmp_path: Path) -> None:
    metrics = train(lm_recipe(tmp_path, TINY_GPT), tmp_path / "runs", show_progress=False)
    losses = [row["loss"] for row in metrics["history"]]
    assert losses[-1] < 0.45 * losses[0]
    run = tmp_path / "runs" / "run"
    names = {
        "config.toml",
        "tokenizer.json",
        "model.safetensors",
        "model_config.json",
        "metrics.json",
        "loss_curve.png",
    }
    assert names <= {path.name for path in run.iterdir()}
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["steps"] == 100 and saved["stopped"] == "max_steps" and saved["kind"] == "transformer_lm"
    assert saved["data"] == [str(tmp_path / "corpus.txt")] and saved["torch_version"]
    model, config = load_run_model(run)
    assert config["vocab_size"] == model.config.vocab_size == 4 + len(set(TEXT))
    assert evaluate_run(run)["val_nats_per_char"] == pytest.approx(saved["val_nats_per_char"], rel=1e-6)


@pytest.mark.parametrize("model", [TINY_GPT, TINY_LSTM], ids=["transformer", "lstm"])
def test_resume_from_a_checkpoint_continues_bit_identically(tmp_path: Path, model: dict[str, Any]) -> None:
    with_dropout = {**model, "dropout": 0.1}  # the global RNG state must be restored too
    straight = train(
        lm_recipe(tmp_path, with_dropout, "a", max_steps=8, eval_every=3), tmp_path, show_progress=False
    )
    recipe = lm_recipe(tmp_path, with_dropout, "b", max_steps=8, eval_every=3)
    partial = train(recipe, tmp_path, show_progress=False, interrupt_at_step=5)
    assert partial["interrupted"] and partial["step"] == 5
    resumed = train(recipe, tmp_path, show_progress=False, resume=True)
    weights_a = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    weights_b = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
    assert [row["loss"] for row in straight["history"]] == [row["loss"] for row in resumed["history"]]
    assert straight["val_nats_per_char"] == resumed["val_nats_per_char"]


def test_resume_refuses_a_changed_recipe(tmp_path: Path) -> None:
    recipe = lm_recipe(tmp_path, TINY_LSTM, max_steps=4)
    train(recipe, tmp_path, show_progress=False, interrupt_at_step=2)
    changed = recipe_from_dict({**recipe.to_dict(), "optim": {**recipe.to_dict()["optim"], "lr": 0.1}})
    with pytest.raises(ValueError, match="different recipe"):
        train(changed, tmp_path, show_progress=False, resume=True)


def test_time_budget_stops_the_run_with_the_schedule_at_its_floor(tmp_path: Path) -> None:
    recipe = lm_recipe(
        tmp_path, TINY_LSTM, max_steps=1_000_000, max_minutes=0.03, log_every=1, eval_every=10**6
    )
    metrics = train(recipe, tmp_path, show_progress=False)
    assert metrics["stopped"] == "max_minutes"
    assert 1.8 <= metrics["seconds"] < 4.0
    final_lr = metrics["history"][-1]["lr"]
    assert final_lr < 3e-4 + 0.05 * (3e-3 - 3e-4)


def test_weight_decay_skips_biases_norm_gains_and_embeddings() -> None:
    model = build_model("transformer_lm", resolve_model_config({**TINY_GPT, "preset": "gpt2"}, 20))
    skipped = {name for name, p in model.named_parameters() if id(p) in no_decay_parameters(model)}
    assert "tok_emb.weight" in skipped and "pos_emb.weight" in skipped
    assert "blocks.0.attn_norm.weight" in skipped and "blocks.0.attn.q_proj.bias" in skipped
    assert "blocks.0.attn.q_proj.weight" not in skipped and "blocks.0.mlp.up_proj.weight" not in skipped


def test_auxiliary_lm_loss_counts_real_tokens_only() -> None:
    input_ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]])
    mask = (input_ids != 0).long()
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0))
    expected = nn.functional.cross_entropy(
        torch.stack([logits[0, 0], logits[0, 1], logits[1, 0]]), torch.tensor([6, 7, 6])
    )
    assert auxiliary_lm_loss(logits, input_ids, mask).item() == pytest.approx(expected.item())
    logits[1, 1:] = 100.0  # predictions whose target is padding must not count
    assert auxiliary_lm_loss(logits, input_ids, mask).item() == pytest.approx(expected.item())


def classifier_recipe(tmp_path: Path, model: dict[str, Any], **task: Any) -> Recipe:
    words = {0: ["awful dull", "bad boring", "dull bad"], 1: ["great fun", "fun lovely", "lovely great"]}
    lines = [f"{label} {text} film" for label, texts in words.items() for text in texts]
    (tmp_path / "train.txt").write_text("\n".join(lines * 6) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines) + "\n")
    data = {
        "format": "labelled_lines",
        "train": str(tmp_path / "train.txt"),
        "dev": str(tmp_path / "dev.txt"),
        "labels": ["negative", "positive"],
    }
    optim = {
        "lr": 1e-2,
        "min_lr": 1e-3,
        "warmup_steps": 5,
        "max_steps": 300,
        "batch_size": 6,
        "eval_every": 10,
        "threads": 1,
    }
    return recipe_from_dict(
        {
            "name": "cls",
            "data": data,
            "tokenizer": {"kind": "char"},
            "model": model,
            "optim": optim,
            "task": {"patience": 3, **task},
        }
    )


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "rnn_classifier", "cell": "gru", "embed_dim": 16, "hidden_size": 16},
        {**TINY_GPT, "kind": "transformer_classifier"},
    ],
    ids=["rnn", "transformer"],
)
def test_classifier_learns_stops_early_and_keeps_the_best_weights(
    tmp_path: Path, model: dict[str, Any]
) -> None:
    recipe = classifier_recipe(tmp_path, model)
    metrics = train(recipe, tmp_path, show_progress=False)
    assert metrics["dev_accuracy"] == 1.0
    assert metrics["stopped"] == "early_stopping" and metrics["steps"] < 300
    assert metrics["labels"] == ["negative", "positive"]
    best = max(row["dev_accuracy"] for row in metrics["evals"])
    assert evaluate_run(tmp_path / "cls")["dev_accuracy"] == best


def test_transformer_classifier_starts_from_a_pretrained_lm_run(tmp_path: Path) -> None:
    train(lm_recipe(tmp_path, TINY_GPT, "lm", max_steps=20), tmp_path, show_progress=False)
    lm_run = tmp_path / "lm"
    model = {"kind": "transformer_classifier", "init_from": str(lm_run), "dropout": 0.0}
    recipe = classifier_recipe(tmp_path, model)
    frozen = recipe_from_dict(
        {
            **recipe.to_dict(),
            "optim": {**recipe.to_dict()["optim"], "lr": 1e-12, "min_lr": 0.0, "max_steps": 1},
        }
    )
    train(frozen, tmp_path, show_progress=False)
    assert (tmp_path / "cls" / "tokenizer.json").read_text() == (lm_run / "tokenizer.json").read_text()
    classifier, config = load_run_model(tmp_path / "cls")
    pretrained, lm_config = load_run_model(lm_run)
    assert {k: config[k] for k in ("d_model", "n_layer", "vocab_size")} == {
        k: lm_config[k] for k in ("d_model", "n_layer", "vocab_size")
    }
    for name, weight in pretrained.state_dict().items():
        assert torch.allclose(classifier.lm.state_dict()[name], weight, atol=1e-6), name


def test_recipes_round_trip_through_toml_and_reject_unknown_keys(tmp_path: Path) -> None:
    recipe = lm_recipe(tmp_path, TINY_GPT)
    path = tmp_path / "recipe.toml"
    path.write_text(recipe_to_toml(recipe))
    assert load_recipe(path) == recipe
    with pytest.raises(ValueError, match="unknown keys"):
        recipe_from_dict({**recipe.to_dict(), "optim": {"learning_rate": 1.0}})
    with pytest.raises(ValueError, match="unknown model keys"):
        resolve_model_config({**TINY_GPT, "n_layers": 3}, 10)


def test_default_recipes_load_and_build_their_models() -> None:
    paths = read_defaults(Path(__file__).resolve().parents[2] / "training" / "configs" / "defaults.txt")
    assert {path.name for path in paths} >= {"shakespeare-gpt.toml", "shakespeare-lstm.toml"}
    for path in paths:
        recipe = load_recipe(path)
        if recipe.model.get("init_from"):
            continue  # shaped by the run it starts from: see tests/training/test_sentiment.py
        config = resolve_model_config(recipe.model, 1024)
        assert recipe.optim.max_minutes and recipe.optim.max_minutes <= 18
        assert sum(p.numel() for p in build_model(config["kind"], config).parameters()) > 100_000


def test_cli_trains_a_recipe_and_evaluates_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text(recipe_to_toml(lm_recipe(tmp_path, TINY_LSTM)))
    runs = tmp_path / "runs"
    assert (
        main(["train", "--config", str(path), "--runs-dir", str(runs), "--max-steps", "5", "--no-progress"])
        == 0
    )
    assert json.loads((runs / "run" / "metrics.json").read_text())["steps"] == 5
    assert main(["eval", "--run", str(runs / "run")]) == 0
    assert '"val_nats_per_char"' in capsys.readouterr().out
    assert main(["tokenizer", "--config", str(path), "--out", str(tmp_path / "tok.json")]) == 0
    assert (tmp_path / "tok.json").exists()
