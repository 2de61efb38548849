"""Accuracy of the served classifiers, called over REST as a user calls them: a real server
(`python -m service`) on 127.0.0.1 serving exported_models/, and POST /v1/sentiment.

    python -m bench.sentiment_accuracy [--models sst2-gpt sst2-lstm] [--limit N]
    python -m bench.sentiment_accuracy --folds 700-799 --sets polarity --set pooling=max  # selection

- SST-2 dev (872 sentences, sst2/dev.txt);
- polarity-v2 folds cv800-cv899 (200 full reviews), which no recipe trains, selects or tunes on.
Texts are sent 16 to a request, as they are in the files (no client-side cutting). `--limit N`
scores the first N examples of each set only (a quick check of the script, not a figure).
`--set key=value` serves each model with that field of its manifest's `preprocessing` replaced
(a linked copy of the folder; the committed one is untouched): with `--folds 700-799` it is how
the long-document policy is chosen on selection folds, never on cv800-cv899.
Writes bench/results/sentiment_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
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


def data_sets(limit: int | None, folds: str, wanted: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """name -> (texts, labels) of each evaluation set, read from the shared data root."""
    sets = {}
    if "sst2" in wanted:
        sst = read_labelled_lines("sst2/dev.txt")
        sets["sst2_dev"] = ([e.text for e in sst], [e.label for e in sst])
    if "polarity" in wanted:
        reviews = read_labelled_folders("polarity-v2", ["neg", "pos"], parse_folds(folds))
        sets[f"polarity_cv{folds}"] = ([e.text for e in reviews], [e.label for e in reviews])
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


def with_preprocessing(folder: Path, changes: dict[str, Any], work: Path) -> Path:
    """A folder that links to `folder`'s files, with fields of its manifest's preprocessing replaced."""
    copy = work / f"{folder.name}-variant"
    copy.mkdir(parents=True)
    for path in folder.iterdir():
        if path.name != "manifest.json":
            (copy / path.name).symlink_to(path.resolve())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocessing"] = {**manifest["preprocessing"], **changes}
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def evaluate(
    models: list[str],
    limit: int | None,
    models_root: Path,
    folds: str,
    wanted: list[str],
    changes: dict[str, Any] | None,
) -> dict[str, Any]:
    sets = data_sets(limit, folds, wanted)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = {name: models_root / name for name in models}
        if changes:
            folders = {name: with_preprocessing(path, changes, work) for name, path in folders.items()}
        folder = linked_models(work, folders)
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
        f"Command: `{command}`. A real server on 127.0.0.1 with the default settings, POST /v1/sentiment, "
        f"{TEXTS_PER_REQUEST} texts a request, whole texts (the service windows long ones as each manifest "
        f"says). {results.get('cpus')} CPUs, load average after the run {results.get('loadavg_1m', 0):.1f}. "
        f"Finished {results['finished']}.",
        "",
    ]
    names = list(next(iter(results["models"].values())))
    lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for model, sets in results["models"].items():
        cells = [f"{100 * sets[n]['accuracy']:.1f} % ({sets[n]['examples']})" for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["sst2-gpt", "sst2-lstm"])
    parser.add_argument("--models-root", type=Path, default=REPO_ROOT / "exported_models")
    parser.add_argument("--limit", type=int, help="first and last N examples of each set (a quick check)")
    parser.add_argument("--folds", default="800-899", help="polarity-v2 folds to score")
    parser.add_argument("--sets", nargs="+", default=["sst2", "polarity"], choices=["sst2", "polarity"])
    parser.add_argument("--set", action="append", default=[], help="preprocessing KEY=VALUE to serve with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python -m bench.sentiment_accuracy " + " ".join(sys.argv[1:])
    changes = {
        key: int(value) if value.isdigit() else value for key, value in (s.split("=", 1) for s in args.set)
    }
    results = {
        "models": evaluate(args.models, args.limit, args.models_root, args.folds, args.sets, changes),
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],  # accuracy does not depend on it; recorded as every figure is
    }
    if args.limit is None and not changes and args.folds == "800-899":  # the reported figure only
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sentiment_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "sentiment_accuracy.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
