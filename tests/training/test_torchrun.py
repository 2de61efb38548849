"""Data-parallel training for real: torchrun, gloo on 127.0.0.1, tiny recipes, bounded in time.

Each launch costs a few seconds of interpreter start per rank, so launches are shared where a
single run can answer several questions (the smoke's two runs answer parity, evaluation and
rank-0-only writing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from training.data import REPO_ROOT
from training.ddp_smoke import (
    TINY_LLAMA,
    SmokeResult,
    launch,
    launch_env,
    run_smoke,
    tiny_recipe,
    train_command,
)
from training.evaluate import evaluate_run
from training.recipe import load_recipe, recipe_from_dict, recipe_to_toml
from training.train import train

pytestmark = pytest.mark.timeout(300)

# Loaded by every Python process of a launch (PYTHONPATH): logs each file-system write a rank makes.
# Audit hooks see Python-level opens, mkdir, rename and remove; safetensors and tokenizers write from
# Rust, but every such write in this code base first creates its folder from Python, which is seen.
WRITE_AUDIT = """
import os, sys
_prefix = os.environ.get("SEQSERVE_TEST_WRITE_LOG")
_rank = os.environ.get("RANK")
if _prefix and _rank is not None:
    _log = open(f"{_prefix}.rank{_rank}", "a", buffering=1)
    _events = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"}

    def _hook(event, args):
        try:
            if event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
                )
                if writing and isinstance(path, (str, bytes, os.PathLike)):
                    _log.write(f"{event} {os.fsdecode(path)}\\n")
            elif event in _events:
                _log.write(f"{event} {os.fsdecode(args[0])}\\n")
        except Exception:
            pass

    sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[SmokeResult, Path]:
    """`make train-ddp-smoke` itself (2 ranks, then 1, 20 steps), with every rank's writes logged."""
    work = tmp_path_factory.mktemp("smoke")
    (work / "hook").mkdir()
    (work / "hook" / "sitecustomize.py").write_text(WRITE_AUDIT)
    env = {"PYTHONPATH": str(work / "hook"), "SEQSERVE_TEST_WRITE_LOG": str(work / "writes")}
    return run_smoke(work, ranks=2, steps=20, extra_env=env), work


def test_two_ranks_reach_the_loss_of_one_rank_at_the_same_global_batch(
    smoke: tuple[SmokeResult, Path],
) -> None:
    result, work = smoke
    assert result.steps == 20
    assert result.relative_difference <= 1e-4, result
    metrics = json.loads((work / "ranks" / "smoke" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 20 and metrics["threads"] >= 1
    assert metrics["history"][0]["loss"] > metrics["history"][-1]["loss"]  # it did learn


def test_evaluation_across_ranks_equals_a_single_process_evaluation(smoke: tuple[SmokeResult, Path]) -> None:
    _, work = smoke
    run = work / "ranks" / "smoke"
    shared = json.loads((run / "metrics.json").read_text())["val_nats_per_char"]
    torch.set_num_threads(1)
    assert evaluate_run(run)["val_nats_per_char"] == pytest.approx(shared, rel=1e-9)


def test_only_rank_zero_writes_the_run_folder(smoke: tuple[SmokeResult, Path]) -> None:
    _, work = smoke
    runs = str(work / "ranks")

    def writes(rank: int) -> list[str]:
        lines = (work / f"writes.rank{rank}").read_text().splitlines()
        return [line for line in lines if runs in line]

    written = "\n".join(writes(0))
    for name in ("config.toml", "model_config.json", "metrics.json", "loss_curve.png", "checkpoint.tmp"):
        assert name in written  # the hook sees rank 0's writes, so it would see rank 1's
    assert f"os.mkdir {runs}/smoke\n" in written + "\n"  # before tokenizer.json and the weights (Rust)
    assert writes(1) == []


GRU = {"kind": "rnn_lm", "cell": "gru", "embed_dim": 16, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}


def test_a_run_saved_with_one_rank_resumes_with_two_and_again_with_one(tmp_path: Path) -> None:
    """1 rank to step 4, 2 ranks (two micro-batches each) to step 8, 1 rank to 12 = 12 steps straight."""
    config = tiny_recipe(tmp_path, name="chain", model=GRU, max_steps=12, eval_every=4, threads=1)
    recipe = load_recipe(config)
    straight = train(recipe, tmp_path / "straight", show_progress=False)
    assert train(recipe, tmp_path / "chain", show_progress=False, interrupt_at_step=4)["interrupted"]
    middle = launch(
        config, tmp_path / "chain", 2, "--resume", "--stop-at-step", "8", "--micro-batch-size", "1"
    )
    assert middle.returncode == 0, middle.stderr[-3000:]
    assert "stopped at step 8" in middle.stdout
    chained = train(recipe, tmp_path / "chain", resume=True, show_progress=False)
    assert chained["steps"] == 12
    losses = [row["loss"] for row in chained["history"]]
    assert losses == pytest.approx([row["loss"] for row in straight["history"]], rel=1e-5)
    assert chained["val_nats_per_char"] == pytest.approx(straight["val_nats_per_char"], rel=1e-5)
    ours = load_file(str(tmp_path / "chain" / "chain" / "checkpoint" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "straight" / "chain" / "checkpoint" / "model.safetensors"))
    for name, weight in theirs.items():
        torch.testing.assert_close(ours[name], weight, rtol=1e-4, atol=1e-5, msg=name)


def test_a_classifier_with_uneven_shares_and_accumulation_trains_as_one_process(tmp_path: Path) -> None:
    """Global batch 5 over 2 ranks (3 + 2 rows, micro-batches of 2): the GPT-1 loss, whose auxiliary
    LM term is a mean over the batch's real tokens, must still add up to the single-process loss."""
    words = {0: ["awful dull", "bad boring", "dull bad"], 1: ["great fun", "fun lovely", "lovely great"]}
    lines = [f"{label} {text} film" for label, texts in words.items() for text in texts]
    (tmp_path / "train.txt").write_text("\n".join(lines * 5) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines) + "\n")
    model = {**TINY_LLAMA, "kind": "transformer_classifier", "head_dropout": 0.0}
    recipe = recipe_from_dict(
        {
            "name": "cls",
            "data": {
                "format": "labelled_lines",
                "train": str(tmp_path / "train.txt"),
                "dev": str(tmp_path / "dev.txt"),
            },
            "tokenizer": {"kind": "char"},
            "model": model,
            "optim": {
                "lr": 1e-2,
                "warmup_steps": 3,
                "batch_size": 5,
                "max_steps": 12,
                "eval_every": 4,
                "log_every": 1,
            },
            "task": {"patience": 100},
            "export": False,
        }
    )
    config = tmp_path / "cls.toml"
    config.write_text(recipe_to_toml(recipe))
    shared = launch(config, tmp_path / "ranks", 2, "--micro-batch-size", "2", "--threads", "1")
    assert shared.returncode == 0, shared.stderr[-3000:]
    several = json.loads((tmp_path / "ranks" / "cls" / "metrics.json").read_text())
    torch.set_num_threads(1)
    single = train(recipe, tmp_path / "single", show_progress=False)
    losses = [row["loss"] for row in several["history"]]
    assert losses == pytest.approx([row["loss"] for row in single["history"]], rel=1e-4)
    assert [row["dev_accuracy"] for row in several["evals"]] == [
        row["dev_accuracy"] for row in single["evals"]
    ]
    assert several["dev_loss"] == pytest.approx(single["dev_loss"], rel=1e-4)


def descendants(root: int) -> dict[int, str | None]:
    """Every live process below `root`, with the RANK torchrun gave it (None for helpers)."""
    parents: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s*(\d+)", text, re.M)
        if match:
            parents[int(status.parent.name)] = int(match.group(1))
    found: dict[int, str | None] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                ranks = [item[5:].decode() for item in environ if item.startswith(b"RANK=")]
                found[pid] = ranks[0] if ranks else None
                frontier.append(pid)
    return found


@pytest.fixture
def long_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, int]]]:
    """A 2-rank run of a tiny recipe that would train for ages, started and seen checkpointing."""
    config = tiny_recipe(tmp_path, max_steps=1_000_000, checkpoint_every=3, eval_every=1_000_000)
    output = tmp_path / "output.txt"
    command = train_command(config, tmp_path / "runs", 2, "--peer-timeout", "5")
    with output.open("wb") as sink:
        launcher = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=launch_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 150
        while not (tmp_path / "runs" / "smoke" / "checkpoint").is_dir():
            assert launcher.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, "training did not start within 150 s"
            time.sleep(0.2)
        ranks = {rank: pid for pid, rank in descendants(launcher.pid).items() if rank is not None}
        assert sorted(ranks) == ["0", "1"]
        yield launcher, output, ranks
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)


def ended(launcher: subprocess.Popen[bytes], pids: dict[str, int], within: float) -> float:
    """Seconds until the launcher exited; asserts it did within `within` and left no rank behind."""
    started = time.monotonic()
    try:
        launcher.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run was still going {within:.0f} s later")
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists(), f"rank process {pid} outlived the run"
    return time.monotonic() - started


def test_a_killed_rank_ends_the_whole_run_within_a_minute_naming_it(long_run: Any) -> None:
    launcher, output, ranks = long_run
    os.kill(ranks["1"], signal.SIGKILL)
    seconds = ended(launcher, ranks, within=60)
    text = output.read_text()
    assert launcher.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*-9", text), text[-3000:]
    assert "Root Cause" in text and seconds < 60


@pytest.mark.slow
def test_a_hung_rank_ends_the_run_after_the_peer_timeout_naming_it(long_run: Any) -> None:
    launcher, output, ranks = long_run
    os.kill(ranks["1"], signal.SIGSTOP)  # alive, holding its sockets, answering nothing
    try:
        # 5 s peer timeout, up to 5 s more to name the silent rank, then torchrun's 30 s SIGTERM grace
        # before it SIGKILLs the stopped process.
        ended(launcher, ranks, within=90)
    finally:
        if Path(f"/proc/{ranks['1']}").exists():
            os.kill(ranks["1"], signal.SIGCONT)
    text = output.read_text()
    assert launcher.returncode != 0
    assert "PeerLost: rank 0 of 2" in text and "Ranks 1 failed to pass monitoredBarrier" in text, text[-3000:]
