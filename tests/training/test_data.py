"""Corpus readers and splits: exact conventions, fold selection, and where relative paths point."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import (
    DATA_DIR_ENV,
    data_root,
    load_classification_corpus,
    load_lm_corpus,
    parse_folds,
    read_labelled_folders,
    read_labelled_lines,
    read_text,
    resolve_data_path,
    split_text,
)
from training.recipe import DataConfig

SHAKESPEARE = data_root() / "tinyshakespeare" / "input.txt"
SST2 = data_root() / "sst2"
POLARITY = data_root() / "polarity-v2"
needs_shared_data = pytest.mark.skipif(not SHAKESPEARE.exists(), reason="shared data sets not present")


@needs_shared_data
def test_shakespeare_split_is_first_90_percent_of_characters_then_the_rest() -> None:
    text = read_text("tinyshakespeare/input.txt")
    split = split_text(text, 0.9)
    assert len(text) == 1_115_394
    assert len(split.train) == 1_003_854  # int(0.9 * 1_115_394)
    assert split.train + split.val == text
    assert split.val == text[1_003_854:]


def test_split_text_rejects_fractions_outside_the_open_unit_interval() -> None:
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            split_text("abc", fraction)


def test_read_text_keeps_every_character_including_carriage_returns(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes("line one\r\nline two é\r\n".encode())
    assert read_text(path) == "line one\r\nline two é\r\n"


def test_labelled_lines_split_label_from_text_and_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labelled.txt"
    path.write_text("1 a fine film .\n\n0 wo n't sit still\n")
    examples = read_labelled_lines(path)
    assert [(e.label, e.text) for e in examples] == [(1, "a fine film ."), (0, "wo n't sit still")]


def test_labelled_lines_reject_a_line_without_a_label(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1 good\nno label here\n")
    with pytest.raises(ValueError, match=":2:"):
        read_labelled_lines(path)


@needs_shared_data
def test_sst2_has_the_kim_2014_split_sizes_and_binary_labels() -> None:
    corpus = load_classification_corpus(
        DataConfig(
            format="labelled_lines",
            train="sst2/train.txt",
            dev="sst2/dev.txt",
            labels=["negative", "positive"],
        )
    )
    assert (len(corpus.train), len(corpus.dev)) == (6920, 872)
    assert {e.label for e in corpus.train} == {0, 1}
    assert corpus.labels == ["negative", "positive"]


def test_parse_folds_reads_ranges_lists_and_single_folds() -> None:
    assert parse_folds("0-2,7") == frozenset({0, 1, 2, 7})
    assert parse_folds([3, 4]) == frozenset({3, 4})
    assert parse_folds(None) is None
    with pytest.raises(ValueError):
        parse_folds("9-3")


def test_folder_corpus_labels_by_class_order_and_selects_folds_by_prefix(tmp_path: Path) -> None:
    for name, folds in (("neg", (0, 1, 5)), ("pos", (0, 5))):
        (tmp_path / name).mkdir()
        for fold in folds:
            (tmp_path / name / f"cv{fold:03d}_{name}.txt").write_text(f"{name} review {fold}\n")
    (tmp_path / "neg" / "notes.txt").write_text("no fold prefix")
    examples = read_labelled_folders(tmp_path, ["neg", "pos"], parse_folds("0-1"))
    assert [(e.label, e.text) for e in examples] == [
        (0, "neg review 0"),
        (0, "neg review 1"),
        (1, "pos review 0"),
    ]
    assert len(read_labelled_folders(tmp_path, ["neg", "pos"])) == 6  # no fold filter: every file


@needs_shared_data
def test_polarity_folds_split_into_disjoint_train_and_dev_sets() -> None:
    data = DataConfig(
        format="folders", path="polarity-v2", classes=["neg", "pos"], train_folds="0-799", dev_folds="800-899"
    )
    corpus = load_classification_corpus(data)
    assert (len(corpus.train), len(corpus.dev)) == (1600, 200)
    assert sum(e.label for e in corpus.dev) == 100
    assert not {e.text for e in corpus.train} & {e.text for e in corpus.dev}
    assert corpus.labels == ["neg", "pos"]


def test_folder_corpus_as_lm_text_uses_train_folds_for_train_and_dev_folds_for_val(tmp_path: Path) -> None:
    (tmp_path / "pos").mkdir()
    for fold in range(4):
        (tmp_path / "pos" / f"cv{fold:03d}_x.txt").write_text(f"doc {fold}\n")
    split = load_lm_corpus(
        DataConfig(format="folders", path=str(tmp_path), classes=["pos"], train_folds="0-2", dev_folds="3")
    )
    assert split.train == "doc 0\n\ndoc 1\n\ndoc 2\n"
    assert split.val == "doc 3\n"


def test_relative_paths_resolve_under_the_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    (tmp_path / "corpus.txt").write_text("hello")
    assert resolve_data_path("corpus.txt") == tmp_path / "corpus.txt"
    assert read_text("corpus.txt") == "hello"
    assert resolve_data_path("/abs/file.txt") == Path("/abs/file.txt")


def test_default_data_root_is_shared_data_beside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    repo_root = Path(__file__).resolve().parents[2]
    assert data_root() == (repo_root.parent / "shared" / "data").resolve()
