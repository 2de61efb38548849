"""Readers for the three corpus shapes we train on, and the splits that make results comparable.

Paths are always arguments. A relative path in a recipe is read under the data root, which is
`../shared/data` beside the repository, or `$SEQSERVE_DATA_DIR` when set, so a user points the
same recipe at their own copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.recipe import DataConfig

DATA_DIR_ENV = "SEQSERVE_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
FOLD_PATTERN = re.compile(r"^cv(\d+)_")


@dataclass(frozen=True)
class TextSplit:
    """A language-model corpus cut into a training and a validation text."""

    train: str
    val: str


@dataclass(frozen=True)
class LabelledExample:
    """One classification example: its raw text and the index of its label."""

    text: str
    label: int


def data_root() -> Path:
    """The folder that relative data paths are read from (env override first)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def resolve_data_path(path: str | Path) -> Path:
    """Absolute paths stay as given; relative ones are taken under `data_root()`."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else data_root() / candidate


def read_text(path: str | Path) -> str:
    """The file's exact characters: newline="" keeps `\\r\\n` as is, so nats/char count every char."""
    with open(resolve_data_path(path), encoding="utf-8", newline="") as handle:
        return handle.read()


def split_text(text: str, train_fraction: float = 0.9) -> TextSplit:
    """First `train_fraction` of the characters for training, the rest for validation (nanoGPT's split)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    cut = int(len(text) * train_fraction)
    return TextSplit(train=text[:cut], val=text[cut:])


def read_labelled_lines(path: str | Path) -> list[LabelledExample]:
    """`LABEL TEXT` per line (SST-2 style); blank lines are skipped, a malformed one is an error."""
    examples = []
    resolved = resolve_data_path(path)
    with open(resolved, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            label, _, text = line.partition(" ")
            if not label.lstrip("-").isdigit() or not text.strip():
                raise ValueError(f"{resolved}:{number}: expected 'LABEL TEXT', got {line[:60]!r}")
            examples.append(LabelledExample(text=text.strip(), label=int(label)))
    return examples


def parse_folds(spec: str | Sequence[int] | None) -> frozenset[int] | None:
    """Fold selection: "0-799", "0-99,200-299", or a list of fold numbers; None means every fold."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return frozenset(int(fold) for fold in spec)
    folds: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"fold range {part!r} runs backwards")
        folds.update(range(first, last + 1))
    return frozenset(folds)


def fold_of(path: Path) -> int | None:
    """The cross-validation fold a polarity-v2 file belongs to, from its `cvNNN_` prefix."""
    match = FOLD_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def read_labelled_folders(
    root: str | Path, classes: Sequence[str], folds: Iterable[int] | None = None
) -> list[LabelledExample]:
    """One file per example under `root/<class>/`; the label is the class's index in `classes`.

    With `folds`, only files whose `cvNNN_` prefix is in it are read (files without a prefix are then
    left out). Order is class by class, file names sorted, so runs are reproducible.
    """
    base = resolve_data_path(root)
    wanted = None if folds is None else frozenset(folds)
    examples = []
    for label, name in enumerate(classes):
        folder = base / name
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {folder} does not exist")
        for file in sorted(folder.iterdir()):
            if not file.is_file() or (wanted is not None and fold_of(file) not in wanted):
                continue
            examples.append(LabelledExample(text=file.read_text(encoding="utf-8").strip(), label=label))
    if not examples:
        raise ValueError(f"no examples found under {base} for classes {list(classes)} and folds {folds}")
    return examples


def read_folder_text(root: str | Path, classes: Sequence[str], folds: Iterable[int] | None = None) -> str:
    """Documents of a folder corpus joined by blank lines: in-domain text for LM pre-training."""
    return "\n\n".join(example.text for example in read_labelled_folders(root, classes, folds)) + "\n"


@dataclass(frozen=True)
class ClassificationData:
    """Training and dev examples of a classification corpus, with its label names."""

    train: list[LabelledExample]
    dev: list[LabelledExample]
    labels: list[str]


def read_unlabelled_lines(paths: Sequence[str | Path]) -> str:
    """The texts of labelled-lines files, one a line, labels dropped: in-domain text for LM pre-training."""
    return "".join(example.text + "\n" for path in paths for example in read_labelled_lines(path))


def load_lm_corpus(data: DataConfig) -> TextSplit:
    """The recipe's language-model corpus: a text file split by characters, or folder folds.

    `extra_train_texts` (labelled-lines files, labels dropped) are appended to the training text only.
    """
    if data.format == "text":
        split = split_text(read_text(data.path), data.train_fraction)
    elif data.format == "folders":
        split = TextSplit(
            train=read_folder_text(data.path, data.classes, parse_folds(data.train_folds or None)),
            val=read_folder_text(data.path, data.classes, parse_folds(data.dev_folds or None)),
        )
    else:
        raise ValueError(f"a language model reads format 'text' or 'folders', not {data.format!r}")
    if data.extra_train_texts:
        split = TextSplit(train=split.train + read_unlabelled_lines(data.extra_train_texts), val=split.val)
    return split


def load_classification_corpus(data: DataConfig) -> ClassificationData:
    """The recipe's labelled corpus: SST-style line files or a folder corpus selected by folds."""
    if data.format == "labelled_lines":
        train, dev = read_labelled_lines(data.train), read_labelled_lines(data.dev)
    elif data.format == "folders":
        if not data.dev_folds:
            raise ValueError("a folder corpus needs dev_folds to select models on")
        train = read_labelled_folders(data.path, data.classes, parse_folds(data.train_folds or None))
        dev = read_labelled_folders(data.path, data.classes, parse_folds(data.dev_folds))
    else:
        raise ValueError(f"a classifier reads format 'labelled_lines' or 'folders', not {data.format!r}")
    if data.extra_train_folders:  # multi-task: e.g. polarity-v2 reviews beside SST-2 sentences
        if not data.classes or not data.extra_train_folds:
            raise ValueError("extra_train_folders needs classes and extra_train_folds")
        train = train + read_labelled_folders(
            data.extra_train_folders, data.classes, parse_folds(data.extra_train_folds)
        )
    num_labels = 1 + max(example.label for example in train + dev)
    labels = list(data.labels) or list(data.classes) or [str(index) for index in range(num_labels)]
    if len(labels) < num_labels or min(example.label for example in train + dev) < 0:
        raise ValueError(f"labels {labels} do not cover the label ids 0..{num_labels - 1} in the data")
    return ClassificationData(train=train, dev=dev, labels=labels)


def data_paths(data: DataConfig) -> list[str]:
    """The resolved files/folders a recipe read: recorded in metrics.json and the manifest."""
    names = [data.path] if data.format in ("text", "folders") else [data.train, data.dev]
    names += [*data.extra_train_texts, data.extra_train_folders]
    return [str(resolve_data_path(name)) for name in names if name]
