"""The linear reference the neural sentiment models must beat: NBSVM (Wang & Manning 2012) as
logistic regression on naive-Bayes-scaled binary uni+bigram features, on the same splits the models
are scored on.

    python -m bench.linear_baseline [--out bench/results/linear_baseline.json]

- SST-2: trained on sst2/train.txt, scored on sst2/dev.txt.
- polarity-v2: trained on folds cv000-cv799, scored on cv800-cv899 (the folds the neural models
  never read). A linear model reads the whole review at once, which is why it is strong on documents.
`C` is chosen on a held-out part of the training data only (SST-2: none, the default; polarity:
folds cv700-cv799 while training on cv000-cv699), then refitted on the full training split.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from training.data import parse_folds, read_labelled_folders, read_labelled_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
CHOICES_OF_C = (0.1, 0.3, 1.0, 3.0, 10.0)


class NBSVM:
    """Binary bag of n-grams, each feature scaled by its naive-Bayes log-count ratio r, then an
    L2-regularised logistic regression (the NBLR variant of NBSVM, which scores the same)."""

    def __init__(self, c: float = 1.0, ngrams: tuple[int, int] = (1, 2), alpha: float = 1.0) -> None:
        self.vectorizer = CountVectorizer(ngram_range=ngrams, binary=True, token_pattern=r"[^ \n]+")
        self.c, self.alpha = c, alpha
        self.ratio: np.ndarray | None = None
        self.model = LogisticRegression(C=c, max_iter=2000)

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> NBSVM:
        features = self.vectorizer.fit_transform(texts)
        y = np.asarray(labels)
        positive = self.alpha + np.asarray(features[y == 1].sum(axis=0)).ravel()
        negative = self.alpha + np.asarray(features[y == 0].sum(axis=0)).ravel()
        self.ratio = np.log((positive / positive.sum()) / (negative / negative.sum()))
        self.model.fit(self._scaled(features), y)
        return self

    def _scaled(self, features: sparse.spmatrix) -> sparse.spmatrix:
        return features.multiply(self.ratio).tocsr()

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        predicted = self.model.predict(self._scaled(self.vectorizer.transform(texts)))
        return float(np.mean(predicted == np.asarray(labels)))


def folds(spec: str) -> tuple[list[str], list[int]]:
    examples = read_labelled_folders("polarity-v2", ["neg", "pos"], parse_folds(spec))
    return [e.text for e in examples], [e.label for e in examples]


def best_c(train: tuple[list[str], list[int]], selection: tuple[list[str], list[int]]) -> tuple[float, dict]:
    scores = {c: NBSVM(c).fit(*train).accuracy(*selection) for c in CHOICES_OF_C}
    return max(CHOICES_OF_C, key=lambda c: (scores[c], -abs(np.log(c)))), scores


def run(sst2_dir: str = "sst2", test_folds: str = "800-899") -> dict:
    started = time.perf_counter()
    sst_train, sst_dev = (
        read_labelled_lines(f"{sst2_dir}/train.txt"),
        read_labelled_lines(f"{sst2_dir}/dev.txt"),
    )
    sst = NBSVM().fit([e.text for e in sst_train], [e.label for e in sst_train])
    sst_accuracy = sst.accuracy([e.text for e in sst_dev], [e.label for e in sst_dev])
    c, selection = best_c(folds("0-699"), folds("700-799"))
    polarity = NBSVM(c).fit(*folds("0-799"))
    return {
        "model": "NBSVM (NB-scaled binary uni+bigrams, logistic regression)",
        "sst2_dev_accuracy": sst_accuracy,
        "polarity_test_folds": test_folds,
        "polarity_test_accuracy": polarity.accuracy(*folds(test_folds)),
        "polarity_c": c,
        "polarity_selection_accuracy_by_c": {str(k): v for k, v in selection.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "linear_baseline.json")
    args = parser.parse_args()
    result = run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
