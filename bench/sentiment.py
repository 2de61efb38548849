"""Sentiment through the service: one-text requests from 64 concurrent callers vs sequential calls
(the dynamic batcher's gain), and one ~700-word review vs one sentence at concurrency 1 (the cost
of reading a long text whole, in windows), against `python -m service`.

    python -m bench.sentiment [--requests 2000] [--concurrency 64] [--max-delay-ms 5]

`--max-delay-ms` is the server's SEQSERVE_CLASSIFIER_MAX_DELAY_MS; an idle batcher dispatches a lone
request at once whatever it is, so the sequential figure no longer pays it (run both 5 and 0).
The review is the polarity-v2 review (folds cv800-cv899) whose length is closest to 700 words.

Uses exported_models/sst2-gpt (or sst2-lstm) when exported, else the tiny seeded classifier fixture
(needs torch). Writes bench/results/sentiment.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from harness.loadgen import percentile
from harness.server_process import REPO_ROOT, ServerProcess, linked_models

RESULTS = REPO_ROOT / "bench" / "results"
TEXTS = ("a gorgeous, witty, seductive movie", "a tedious mess", "it is what it is", "not bad at all")


def classifier_dir(work: Path, wanted: str | None = None) -> tuple[Path, str]:
    """A real sst2 export if there is one, else the tiny seeded transformer classifier."""
    for name in [wanted] if wanted else ("sst2-gpt", "sst2-lstm"):
        if (REPO_ROOT / "exported_models" / name / "manifest.json").exists():
            return REPO_ROOT / "exported_models" / name, f"{name} (exported_models)"
    from harness.tiny_models import make_tiny_model_dir

    return make_tiny_model_dir(work / "tiny-clf", "transformer_classifier"), "tiny classifier fixture"


async def calls(url: str, model: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """(requests/s, per-request seconds) for `requests` one-text calls from `concurrency` callers."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:
        left = iter(range(requests))

        async def caller() -> None:
            for i in left:
                body = {"model": model, "texts": [TEXTS[i % len(TEXTS)]]}
                start = time.perf_counter()
                async with client.post("/v1/sentiment", json=body) as response:
                    response.raise_for_status()
                    await response.read()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(concurrency))), 600.0)
        return requests / (time.perf_counter() - start), latencies


def review_of_about(words: int) -> str:
    """The held-out polarity review (cv800-cv899) closest to `words` words: a real long input."""
    from training.data import parse_folds, read_labelled_folders

    reviews = read_labelled_folders("polarity-v2", ["neg", "pos"], parse_folds("800-899"))
    return min((e.text for e in reviews), key=lambda text: abs(len(text.split()) - words))


async def sequential_latencies(url: str, model: str, text: str, requests: int) -> list[float]:
    """Seconds of each of `requests` one-text calls, one at a time."""
    latencies = []
    async with aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=60.0)) as client:
        for _ in range(requests):
            start = time.perf_counter()
            async with client.post("/v1/sentiment", json={"model": model, "texts": [text]}) as response:
                response.raise_for_status()
                await response.read()
            latencies.append(time.perf_counter() - start)
    return latencies


def long_vs_short(url: str, model: str, requests: int) -> dict[str, Any]:
    """p50 latency at concurrency 1 of one ~700-word review against one sentence."""
    review, sentence = review_of_about(700), TEXTS[0]
    asyncio.run(sequential_latencies(url, model, review, 5))  # warm-up at the long shapes
    short = asyncio.run(sequential_latencies(url, model, sentence, requests))
    long = asyncio.run(sequential_latencies(url, model, review, requests))
    return {
        "requests_each": requests,
        "review_words": len(review.split()),
        "sentence_p50_ms": 1000.0 * percentile(short, 50),
        "review_p50_ms": 1000.0 * percentile(long, 50),
        "review_over_sentence": percentile(long, 50) / percentile(short, 50),
    }


def measure(url: str, model: str, requests: int, concurrency: int) -> dict[str, Any]:
    asyncio.run(calls(url, model, 20, 4))  # warm-up
    results: dict[str, Any] = {"long_vs_short": long_vs_short(url, model, max(requests // 20, 5))}
    for name, callers, count in (("sequential", 1, requests // 4), ("concurrent", concurrency, requests)):
        rate, latencies = asyncio.run(calls(url, model, count, callers))
        results[name] = {
            "callers": callers,
            "requests": count,
            "requests_per_s": rate,
            "p50_ms": 1000.0 * percentile(latencies, 50),
            "p99_ms": 1000.0 * percentile(latencies, 99),
        }
    results["ratio"] = results["concurrent"]["requests_per_s"] / results["sequential"]["requests_per_s"]
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Sentiment ({results['classifier']})",
        "",
        f"Command: `{results['command']}`. {results['cpus']} CPUs, load average after the run "
        f"{results['loadavg_1m']:.1f}. Finished {results['finished']}.",
        "",
        "| callers | requests | requests/s | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for key in ("sequential", "concurrent"):
        r = results[key]
        lines.append(
            f"| {r['callers']} | {r['requests']} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} |"
        )
    lines += [
        "",
        f"Concurrent / sequential: **{results['ratio']:.1f}×** (max_delay {results['max_delay_ms']} ms).",
        "",
    ]
    lv = results["long_vs_short"]
    lines += [
        f"One {lv['review_words']}-word review vs one sentence, concurrency 1, p50 of "
        f"{lv['requests_each']} calls each: {lv['review_p50_ms']:.1f} ms vs {lv['sentence_p50_ms']:.1f} ms, "
        f"**{lv['review_over_sentence']:.1f}×**.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=5.0, help="SEQSERVE_CLASSIFIER_MAX_DELAY_MS")
    parser.add_argument("--model", help="an exported_models/ classifier (default: sst2-gpt)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        work = Path(tmp_name)
        folder, note = classifier_dir(work, args.model)
        name = json.loads((folder / "manifest.json").read_text())["name"]
        server = ServerProcess(
            linked_models(work, {name: folder}),
            work / "server.log",
            classifier_max_delay_ms=args.max_delay_ms,
        ).start_ready()
        try:
            results = measure(server.url, name, args.requests, args.concurrency)
        finally:
            server.stop()
    results |= {
        "classifier": note,
        "max_delay_ms": args.max_delay_ms,
        "command": "python -m bench.sentiment " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentiment.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "sentiment.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
