"""The systems seqserve is measured against, each on the same weights and the same prompts:
onnxruntime-genai's Generator, HF transformers (torch) generate, ORT with no KV cache, and Optimum."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.engine import protocol
from bench.engine.workload import Workload
from service.engine import GenerationEngine

OPTIMUM_REQUIREMENTS = ["optimum-onnx[onnxruntime]==0.1.0", "transformers>=4.57,<4.58", "torch==2.13.0"]
# The CPU build of torch on this machine's wheel folder; PyPI's default torch drags in GBs of CUDA.
TORCH_CPU_WHEELS = Path("/opt/wheels")


def build_genai_model(hf_dir: Path, out_dir: Path, threads: int) -> Path:
    """onnxruntime-genai's model builder on the HF export (fp32, CPU), with our thread count."""
    if not (out_dir / "genai_config.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(out_dir),
            "-p",
            "fp32",
            "-e",
            "cpu",
        ]
        built = subprocess.run(cmd, capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"genai's model builder failed: {built.stderr.strip()[-600:]}")
    config_path = out_dir / "genai_config.json"
    config = json.loads(config_path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2))
    return out_dir


class GenaiPeer:
    """onnxruntime-genai's Generator loop (C++), greedy, on the model its builder made."""

    def __init__(self, genai_dir: Path) -> None:
        import onnxruntime_genai as og

        self._og = og
        self._model = og.Model(str(genai_dir))

    def tokens_per_s(self, work: Workload, batch: int) -> float:
        og = self._og
        prompts = np.asarray(work.prompts(batch), dtype=np.int32)
        total = work.prompt_tokens + work.new_tokens
        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=batch)
        start = time.perf_counter()
        generator = og.Generator(self._model, params)
        generator.append_tokens(prompts)
        while not generator.is_done():
            generator.generate_next_token()
        elapsed = time.perf_counter() - start
        assert len(generator.get_sequence(0)) == total
        return batch * work.new_tokens / elapsed


class TransformersPeer:
    """HF transformers (torch) generate, greedy, on the HF checkpoint; loaded once, like the others."""

    def __init__(self, hf_dir: Path, threads: int) -> None:
        import torch
        import transformers

        torch.set_num_threads(max(1, threads))
        self._torch = torch
        self._model = transformers.AutoModelForCausalLM.from_pretrained(
            str(hf_dir), dtype=torch.float32
        ).eval()

    def tokens_per_s(self, work: Workload, batch: int) -> float:
        torch = self._torch
        ids = torch.tensor(work.prompts(batch))
        start = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=work.new_tokens,
                min_new_tokens=work.new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        elapsed = time.perf_counter() - start
        assert out.shape[1] == work.prompt_tokens + work.new_tokens
        return batch * work.new_tokens / elapsed


def no_cache_tokens_per_s(engine: GenerationEngine, work: Workload, batch: int) -> float:
    """Same ORT graph and weights, but every step re-runs the whole sequence from an empty cache,
    as a server without a KV cache would (greedy)."""
    runner = engine.runner
    sequences = [np.asarray(p, dtype=np.int64) for p in work.prompts(batch)]
    rows = list(range(batch))
    start = time.perf_counter()
    for _ in range(work.new_tokens):
        for row in rows:
            runner.reset(row)
        logits = runner.prefill(rows, sequences, [False] * batch)
        sequences = [np.append(s, int(lg[-1].argmax())) for s, lg in zip(sequences, logits, strict=True)]
    elapsed = time.perf_counter() - start
    for row in rows:
        runner.reset(row)
    return batch * work.new_tokens / elapsed


def optimum_venv(root: Path) -> Path | str:
    """bench/.venv-optimum (transformers 4.57, which Optimum pins); returns its python or why it failed."""
    python = root / "bin" / "python"
    stamp = root / ".installed"
    if stamp.exists():
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
        # torch first, so the CPU build on this machine's index is taken rather than the CUDA wheels.
        wheels = sorted(TORCH_CPU_WHEELS.glob("torch-2.13.0+cpu-*.whl"))
        if not wheels:
            return f"no CPU torch wheel in {TORCH_CPU_WHEELS}; not pulling CUDA torch for Optimum"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(wheels[0])], check=True, capture_output=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *OPTIMUM_REQUIREMENTS],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        detail = (
            exc.stderr.decode(errors="replace")[-300:]
            if isinstance(exc, subprocess.CalledProcessError)
            else ""
        )
        return f"could not build {root}: {exc} {detail}".strip()
    stamp.touch()
    return python


def optimum_tokens_per_s(
    python: Path, hf_dir: Path, onnx_dir: Path, work: Workload, batches: list[int], threads: int, repeats: int
) -> dict[str, float] | str:
    """Runs bench/engine/optimum_worker.py inside the Optimum venv, with the same warm-up and tries per
    batch size as every other system (protocol.py); returns {batch: tokens/s} or why not."""
    worker = Path(__file__).with_name("optimum_worker.py")
    plan_file = onnx_dir.parent / "optimum_plan.json"
    plan = {
        "new_tokens": work.new_tokens,
        "warmup": protocol.WARMUP_RUNS,
        "batches": {
            str(b): {"prompts": work.prompts(b), "tries": protocol.tries(repeats, b)} for b in batches
        },
    }
    plan_file.write_text(json.dumps(plan))
    cmd = [str(python), str(worker), str(hf_dir), str(onnx_dir), str(plan_file), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"optimum worker failed: {proc.stderr.strip()[-400:]}"
    return {str(k): float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
