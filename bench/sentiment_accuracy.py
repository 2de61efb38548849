"""Accuracy of the served classifiers, called over REST as a user calls them: a real server
(`python -m service`) on 127.0.0.1 serving exported_models/, and POST /v1/sentiment.

    python -m bench.sentiment_accuracy [--models sst2-gpt sst2-lstm] [--limit N]

- SST-2 dev (872 sentences, sst2/dev.txt);
- polarity-v2 folds cv800-cv899 (200 full reviews), which no recipe trains, selects or tunes on.
Texts are sent 16 to a request, as they are in the files (no client-side cutting). `--limit N`
scores the first N examples of each set only (a quick check of the script, not a figure).
Writes bench/results/sentiment_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from harness.server_process import REPO_ROOT, ServerProcess, linked_models
from training.data import parse_folds, read_labelled_folders, read_labelled_lines

RESULTS = REPO_ROOT / "bench" / "results"
LABELS = ("negative", "positive")
TEXTS_PER_REQUEST = 16


def data_sets(limit: int | None) -> dict[str, tuple[list[str], list[int]]]:
    """name -> (texts, labels) of each evaluation set, read from the shared data root."""
    sst = read_labelled_lines("sst2/dev.txt")
    reviews = read_labelled_folders("polarity-v2", ["neg", "pos"], parse_folds("800-899"))
    sets = {
        "sst2_dev": ([e.text for e in sst], [e.label for e in sst]),
        "polarity_cv800_899": ([e.text for e in reviews], [e.label for e in reviews]),
    }
    if limit:  # both classes even when cut: polarity files are ordered negative first
        sets = {k: (t[:limit] + t[-limit:], y[:limit] + y[-limit:]) for k, (t, y) in sets.items()}
    return sets


def score(client: httpx.Client, model: str, texts: list[str], labels: list[int]) -> dict[str, Any]:
    """Accuracy of `model` on the texts, through POST /v1/sentiment, plus the wall-clock time."""
    started = time.perf_counter()
    predicted: list[str] = []
    for first in range(0, len(texts), TEXTS_PER_REQUEST):
        body = {"model": model, "texts": texts[first : first + TEXTS_PER_REQUEST]}
        response = client.post("/v1/sentiment", json=body)
        response.raise_for_status()
        predicted += [result["label"] for result in response.json()["results"]]
    correct = sum(int(p == LABELS[y]) for p, y in zip(predicted, labels, strict=True))
    return {
        "accuracy": correct / len(labels),
        "examples": len(labels),
        "seconds": time.perf_counter() - started,
    }


def evaluate(models: list[str], limit: int | None, models_root: Path) -> dict[str, Any]:
    sets = data_sets(limit)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = linked_models(work, {name: models_root / name for name in models})
        server = ServerProcess(folder, work / "server.log").start_ready()
        try:
            with httpx.Client(base_url=server.url, timeout=120.0) as client:
                for model in models:
                    manifest = client.get(f"/v1/models/{model}").json()
                    assert manifest["ready"], manifest
                    results[model] = {name: score(client, model, *pair) for name, pair in sets.items()}
        finally:
            server.stop()
    return results


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Served sentiment accuracy (REST)",
        "",
        f"Command: `{command}`. A real server on 127.0.0.1, POST /v1/sentiment, {TEXTS_PER_REQUEST} texts "
        "a request, whole texts (the service windows long ones as each manifest says).",
        "",
        "| model | SST-2 dev | polarity cv800-cv899 |",
        "|---|---:|---:|",
    ]
    for model, sets in results["models"].items():
        sst, pol = sets["sst2_dev"], sets["polarity_cv800_899"]
        lines.append(
            f"| {model} | {100 * sst['accuracy']:.1f} % ({sst['examples']}) "
            f"| {100 * pol['accuracy']:.1f} % ({pol['examples']}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["sst2-gpt", "sst2-lstm"])
    parser.add_argument("--models-root", type=Path, default=REPO_ROOT / "exported_models")
    parser.add_argument("--limit", type=int, help="first and last N examples of each set (a quick check)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python -m bench.sentiment_accuracy " + " ".join(sys.argv[1:])
    results = {
        "models": evaluate(args.models, args.limit, args.models_root),
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.limit is None:  # a quick check writes nothing that could pass for a figure
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sentiment_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "sentiment_accuracy.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
