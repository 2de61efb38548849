"""Sentiment classifiers: pretrained starts, the long-document policy, padding, clean data, the recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness.tiny_models import TRAINABLE_LLAMA_LM
from training.__main__ import DEFAULTS_LIST, read_defaults
from training.build import build_model, load_run_model, resolve_model_config
from training.data import load_lm_corpus, parse_folds
from training.evaluate import evaluate_heldout
from training.export import export_run
from training.export.onnx_classifier import build_rnn_classifier, build_transformer_classifier
from training.export.ort_decoder import make_session
from training.export.parity import TOLERANCE, check_classifier
from training.long_documents import truncate
from training.models.rnn import RNNClassifier, RNNClassifierConfig
from training.recipe import DataConfig, Recipe, load_recipe, recipe_from_dict
from training.tasks import encode_classifier_text
from training.tasks.classification import bucket_by_length
from training.tokenizer import EOS_ID, train_char_tokenizer
from training.train import train

CONFIGS = DEFAULTS_LIST.parent
SENTIMENT = ("sst2-lstm", "sst2-gpt")
TINY_LSTM_LM = {"kind": "rnn_lm", "cell": "lstm", "embed_dim": 16, "hidden_size": 24, "num_layers": 2}
TINY_GPT_LM = TRAINABLE_LLAMA_LM
WORDS = {0: ["awful dull", "bad boring", "dull bad"], 1: ["great fun", "fun lovely", "lovely great"]}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def write_reviews(tmp_path: Path) -> dict[str, str]:
    """A trivially separable labelled set and an unlabelled text of the same words."""
    lines = [f"{label} {text} film" for label, texts in WORDS.items() for text in texts]
    (tmp_path / "train.txt").write_text("\n".join(lines * 6) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "reviews.txt").write_text(" ".join(t for ts in WORDS.values() for t in ts) * 40 + "\n")
    return {"train": str(tmp_path / "train.txt"), "dev": str(tmp_path / "dev.txt")}


def recipe(name: str, data: dict[str, Any], model: dict[str, Any], **optim: Any) -> Recipe:
    settings = {"lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 5, "batch_size": 6, "eval_every": 10}
    return recipe_from_dict(
        {
            "name": name,
            "data": data,
            "tokenizer": {"kind": "char"},
            "model": model,
            "optim": {**settings, "max_steps": 40, "threads": 1, **optim},
            "task": {"patience": 3, "bptt": 16},
        }
    )


def pretrain(tmp_path: Path, lm: dict[str, Any]) -> Path:
    write_reviews(tmp_path)
    data = {"path": str(tmp_path / "reviews.txt"), "train_fraction": 0.8}
    train(recipe("lm", data, lm, max_steps=20), tmp_path, show_progress=False)
    return tmp_path / "lm"


def classifier_data(tmp_path: Path) -> dict[str, Any]:
    return {"format": "labelled_lines", **write_reviews(tmp_path), "labels": ["negative", "positive"]}


def test_head_tail_truncation_keeps_the_opening_quarter_and_the_closing_rest() -> None:
    review = list(range(100))
    assert truncate(review, 20, "head_tail") == [0, 1, 2, 3, 4, *range(85, 100)]
    assert truncate(review, 20, "head") == list(range(20))
    assert truncate(review, 20, "tail") == list(range(80, 100))
    assert truncate(review[:20], 20, "head_tail") == review[:20]  # a text that fits is kept whole
    with pytest.raises(ValueError, match="truncation"):
        truncate(review, 20, "middle")


def test_a_long_review_is_encoded_with_its_head_and_tail_and_ends_with_eos() -> None:
    opening, middle, verdict = "the plot: ", "x" * 200, " overall, a masterpiece!"
    tokenizer = train_char_tokenizer([opening + middle + verdict])
    ids = encode_classifier_text(tokenizer, opening + middle + verdict, 41, True, "head_tail")
    assert len(ids) == 41 and ids[-1] == EOS_ID
    text = tokenizer.decode(ids[:-1])
    assert text.startswith(opening) and text.endswith(verdict)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_recurrent_classifier_logits_do_not_depend_on_padding(pooling: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    config = RNNClassifierConfig(
        cell="lstm", vocab_size=50, embed_dim=8, hidden_size=12, num_layers=2, dropout=0.0,
        bidirectional=bidirectional, pooling=pooling,
    )  # fmt: skip
    model = RNNClassifier(config).eval()
    rows = [torch.randint(4, 50, (n,)) for n in (9, 3, 6)]
    alone = torch.cat([model(row[None], torch.ones(1, len(row), dtype=torch.long)) for row in rows])
    ids = torch.randint(4, 50, (3, 14))  # padding positions hold arbitrary ids: only the mask may matter
    mask = torch.zeros(3, 14, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    torch.testing.assert_close(model(ids, mask), alone, atol=1e-6, rtol=1e-5)


def test_lstm_classifier_starts_from_the_pretrained_lm_embedding_and_layers(tmp_path: Path) -> None:
    lm_run = pretrain(tmp_path, TINY_LSTM_LM)
    model = {"kind": "rnn_classifier", "init_from": str(lm_run), "bidirectional": False, "dropout": 0.0}
    frozen = recipe("cls", classifier_data(tmp_path), model, lr=1e-12, min_lr=0.0, max_steps=1)
    train(frozen, tmp_path, show_progress=False)
    assert (tmp_path / "cls" / "tokenizer.json").read_text() == (lm_run / "tokenizer.json").read_text()
    classifier, config = load_run_model(tmp_path / "cls")
    assert {k: config[k] for k in ("cell", "embed_dim", "hidden_size", "num_layers")} == {
        "cell": "lstm", "embed_dim": 16, "hidden_size": 24, "num_layers": 2,
    }  # fmt: skip
    lm_weights = load_file(str(lm_run / "model.safetensors"))
    own = classifier.state_dict()
    torch.testing.assert_close(own["embedding.weight"], lm_weights["embedding.weight"])
    for name, weight in lm_weights.items():
        if name.startswith("layers."):
            torch.testing.assert_close(own["forward_" + name], weight, atol=1e-6, rtol=0)


def test_init_from_refuses_a_shape_or_kind_the_lm_run_does_not_have(tmp_path: Path) -> None:
    lm_run = pretrain(tmp_path, TINY_LSTM_LM)
    section = {"kind": "rnn_classifier", "init_from": str(lm_run)}
    with pytest.raises(ValueError, match="hidden_size"):
        resolve_model_config({**section, "hidden_size": 99}, 30, ["negative", "positive"])
    with pytest.raises(ValueError, match="transformer_lm"):
        resolve_model_config({"kind": "transformer_classifier", "init_from": str(lm_run)}, 30, ["n", "p"])


@pytest.mark.parametrize(
    ("lm", "classifier"),
    [
        (TINY_LSTM_LM, {"kind": "rnn_classifier", "bidirectional": False, "pooling": "max"}),
        (TINY_GPT_LM, {"kind": "transformer_classifier"}),
    ],
    ids=["lstm", "gpt"],
)
def test_pretrained_classifier_learns_a_separable_set_and_exports_with_labels_and_parity(
    tmp_path: Path, lm: dict[str, Any], classifier: dict[str, Any]
) -> None:
    lm_run = pretrain(tmp_path, lm)
    model = {**classifier, "init_from": str(lm_run), "dropout": 0.0}
    metrics = train(
        recipe("cls", classifier_data(tmp_path), model, max_steps=200), tmp_path, show_progress=False
    )
    assert metrics["dev_accuracy"] == 1.0
    artifact = export_run(tmp_path / "cls", tmp_path / "exported")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["task"] == "classify" and manifest["labels"] == ["negative", "positive"]
    assert manifest["metrics"]["dev_accuracy"] == 1.0
    assert manifest["tokenizer"]["append_eos"] == (classifier["kind"] == "transformer_classifier")
    assert manifest["metrics"]["parity_max_abs_diff"] <= TOLERANCE
    record = manifest["training"]
    assert record["pretraining"]["seconds"] == json.loads((lm_run / "metrics.json").read_text())["seconds"]
    assert record["total_seconds"] == pytest.approx(record["seconds"] + record["pretraining"]["seconds"])


def test_lm_corpus_appends_extra_texts_to_training_only_with_labels_dropped(tmp_path: Path) -> None:
    (tmp_path / "text.txt").write_text("a" * 90 + "b" * 10)
    (tmp_path / "sentences.txt").write_text("1 a fine film .\n0 a dull one .\n")
    data = DataConfig(path=str(tmp_path / "text.txt"), extra_train_texts=[str(tmp_path / "sentences.txt")])
    split = load_lm_corpus(data)
    assert split.train == "a" * 90 + "a fine film .\na dull one .\n"
    assert split.val == "b" * 10


def sentiment_recipes() -> dict[str, Recipe]:
    """Every recipe of the sentiment family (defaults and report-only ones), by name."""
    paths = [*CONFIGS.glob("sst2-*.toml"), *CONFIGS.glob("polarity-*.toml")]
    return {r.name: r for r in map(load_recipe, paths)}


def test_pretraining_never_reads_sst2_dev_or_the_polarity_evaluation_folds() -> None:
    recipes = sentiment_recipes()
    lms = [r for r in recipes.values() if r.kind in ("transformer_lm", "rnn_lm")]
    assert {r.name for r in lms} >= {"sst2-pretrain-gpt", "sst2-pretrain-lstm"}
    for lm in lms:
        assert lm.data.path == "polarity-v2" and lm.export is False
        assert max(parse_folds(lm.data.train_folds) | parse_folds(lm.data.dev_folds)) < 800
        assert lm.data.extra_train_texts == ["sst2/train.txt"]
    for classifier in (r for r in recipes.values() if r.kind not in ("transformer_lm", "rnn_lm")):
        lm_name = Path(classifier.model["init_from"]).name
        assert lm_name in recipes, f"{classifier.name} starts from a run no recipe makes"
        if classifier.data.format == "labelled_lines":
            assert (classifier.data.train, classifier.data.dev) == ("sst2/train.txt", "sst2/dev.txt")
            if classifier.data.extra_train_folders:  # multi-task: review windows, never the test folds
                assert max(parse_folds(classifier.data.extra_train_folds)) < 700
        else:  # polarity: folds 800-899 are evaluated only after training, never trained or selected on
            assert (
                max(parse_folds(classifier.data.train_folds) | parse_folds(classifier.data.dev_folds)) < 800
            )


def test_make_train_pretrains_before_each_fine_tune_within_twenty_minutes() -> None:
    order = [load_recipe(path) for path in read_defaults(DEFAULTS_LIST)]
    names = [r.name for r in order]
    for name in SENTIMENT:
        fine_tune = order[names.index(name)]
        assert fine_tune.export and fine_tune.model["init_from"] == f"runs/sst2-pretrain-{name[5:]}"
        lm = order[names.index(f"sst2-pretrain-{name[5:]}")]
        assert names.index(lm.name) < names.index(name)
        # Loop budgets; tokenizer, data loading and final evals took 40 s of the last minute (measured).
        assert lm.optim.max_minutes + fine_tune.optim.max_minutes <= 19.0
        assert fine_tune.data.labels == ["negative", "positive"]


@pytest.mark.parametrize("name", SENTIMENT)
def test_the_default_classifier_shapes_export_within_parity_on_a_padded_batch(name: str) -> None:
    fine_tune = load_recipe(CONFIGS / f"{name}.toml")
    lm = load_recipe(CONFIGS / f"sst2-pretrain-{name[5:]}.toml")
    section = {**{k: v for k, v in fine_tune.model.items() if k != "init_from"}, **lm.model}
    section["kind"] = fine_tune.kind
    section = {k: v for k, v in section.items() if k != "tie_weights"}
    config = resolve_model_config(section, lm.tokenizer.vocab_size, ["negative", "positive"])
    torch.manual_seed(0)
    model = build_model(config["kind"], config).eval()
    build = (
        build_transformer_classifier if config["kind"] == "transformer_classifier" else build_rnn_classifier
    )
    diffs = check_classifier(model, make_session(build(model)), seed=3)
    assert max(diffs.values()) <= TOLERANCE
    assert np.isfinite(list(diffs.values())).all()


def test_heldout_folds_are_scored_once_and_may_not_overlap_training_or_selection(tmp_path: Path) -> None:
    for label, texts in WORDS.items():
        folder = tmp_path / "reviews" / ("neg", "pos")[label]
        folder.mkdir(parents=True)
        for fold in range(12):
            (folder / f"cv{fold:03d}_{label}.txt").write_text(f"{texts[fold % 3]} film\n")
    data = {
        "format": "folders",
        "path": str(tmp_path / "reviews"),
        "classes": ["neg", "pos"],
        "train_folds": "0-7",
        "dev_folds": "8-9",
        "labels": ["negative", "positive"],
    }
    model = {"kind": "rnn_classifier", "cell": "gru", "embed_dim": 16, "hidden_size": 16, "dropout": 0.0}
    train(recipe("polarity", data, model, max_steps=60), tmp_path, show_progress=False)
    result = evaluate_heldout(tmp_path / "polarity", "10-11")
    assert result["examples"] == 4 and result["heldout_accuracy"] == 1.0
    assert result["heldout_loss"] < 0.5
    with pytest.raises(ValueError, match="overlap"):
        evaluate_heldout(tmp_path / "polarity", "9-11")


def test_length_buckets_keep_every_example_once_and_batch_similar_lengths() -> None:
    lengths = [1 + (index * 37) % 60 for index in range(1000)]
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    bucketed = bucket_by_length(order, lengths, 32, 10, torch.Generator().manual_seed(1))
    assert sorted(bucketed) == list(range(1000))
    full = [bucketed[k : k + 32] for k in range(0, 992, 32)]  # 31 full batches, 8 left over
    padded = sum(32 * max(lengths[i] for i in batch) for batch in full)
    real = sum(lengths[i] for batch in full for i in batch)
    assert padded < 1.15 * real  # random batches of these lengths pad to about 1.9x
