"""Export a committed decoder again from its own artifact, with the current graph options.

`python -m training reexport exported_models/<name>` rebuilds the torch model from model.onnx
(training/export/rebuild.py), checks it against the committed graph, and writes:
- model.onnx: the CPU variant, float32 compute with fused residual+RMSNorm, and the KV cache the
  measurements allow (int8 when it costs at most MAX_NATS_COST nats/char, else float32), and quantized
  weights only when asked (`weights=`: a benchmark decides that, not this export);
- model.fp16.onnx: the CUDA variant (training/export/fp16_variant.py);
- manifest.json: the old one's records kept, the graph sections, `variants` and every figure measured
  (docs/artifact-contract.md).
Every figure is computed on the graph in onnxruntime over the recipe's full validation split.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from training.export import manifest as mf
from training.export import parity
from training.export.artifact import MODEL_FILE, TOKENIZER_FILE, published
from training.export.fp16_variant import FLOAT16_FILE, float16_graph, float16_parity
from training.export.fusions import SKIP_NORM, fuse_skip_rmsnorm
from training.export.graph_scoring import (
    graph_nats_per_char,
    greedy_agreement,
    greedy_tokens,
    recipe_streams,
    validation_prompts,
)
from training.export.kv_quant import (
    INT8_CACHE_TOLERANCE,
    cache_logit_diff,
    calibrate_scales,
    calibration_windows,
    kv_cache_record,
    quantize_kv_cache,
    strip_kv_quantization,
)
from training.export.onnx_decoder import build_decoder
from training.export.ort_decoder import make_session
from training.export.rebuild import Rebuilt, check_rebuild, rebuild_artifact
from training.export.weight_quant import CANDIDATES, quantize_weights

log = logging.getLogger(__name__)

# The bar for adopting any lossy format by default.
MAX_NATS_COST = 0.01
GREEDY_PROMPTS = 8
GREEDY_TOKENS = 64
KV_CACHE_CHOICES = ("auto", "int8", "float32")


@dataclass(frozen=True)
class ReexportOptions:
    """What the re-export may change. `kv_cache="auto"`: int8 if it costs <= MAX_NATS_COST."""

    kv_cache: str = "auto"
    quant_type: str = "PER_CHANNEL"
    weights: str = "float32"
    measure_weight_candidates: bool = True
    cuda_variant: bool = True
    threads: int = 2
    greedy_prompts: int = GREEDY_PROMPTS
    greedy_tokens: int = GREEDY_TOKENS


def fused_float32_graph(rebuilt: Rebuilt) -> onnx.ModelProto:
    """The contract decoder from the rebuilt model at the committed cache length, residual+norm fused."""
    max_len = int(rebuilt.manifest["onnx"]["kv_cache"]["max_len"])
    graph, fused = fuse_skip_rmsnorm(build_decoder(rebuilt.model, max_len))
    log.info("%s: %d residual+RMSNorm pairs fused", rebuilt.manifest["name"], fused)
    return graph


def float32_cache_artifact(folder: Path, out_dir: Path) -> Path:
    """A copy of an artifact whose model.onnx has a float32 cache (its int8 quantization stripped) and a
    manifest saying so: the comparison run of bench/engine. Not for committing."""
    folder, out_dir = Path(folder), Path(out_dir)
    manifest = json.loads((folder / mf.MANIFEST_FILE).read_text())
    graph = strip_kv_quantization(onnx.load(str(folder / manifest["onnx"]["file"])))
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(graph, str(out_dir / MODEL_FILE))
    shutil.copyfile(folder / manifest["tokenizer"]["file"], out_dir / TOKENIZER_FILE)
    geometry = {k: manifest["onnx"]["kv_cache"][k] for k in ("num_layers", "kv_heads", "head_dim", "max_len")}
    onnx_info = {
        **manifest["onnx"],
        **mf.onnx_section(graph, MODEL_FILE, {**geometry, "dtype": "float32"}, None),
    }
    files = {name: mf.file_record(out_dir / name) for name in (MODEL_FILE, TOKENIZER_FILE)}
    derived = {
        **{k: v for k, v in manifest.items() if k != "variants"},
        "onnx": onnx_info,
        "tokenizer": {**manifest["tokenizer"], "file": TOKENIZER_FILE},
        "files": files,
    }
    mf.write_manifest(out_dir, derived)
    return out_dir


def section_of(graph: onnx.ModelProto, file: str, kv_cache: dict[str, Any], weights: str) -> dict[str, Any]:
    """An `onnx`-style section (inputs, outputs, cache) for one graph file."""
    fusions = sorted({SKIP_NORM} & {n.op_type for n in graph.graph.node})
    return {**mf.onnx_section(graph, file, kv_cache, None), "weights": weights, "fusions": fusions}


def reexport(folder: Path, out_dir: Path | None = None, options: ReexportOptions | None = None) -> Path:
    """Rebuild, measure and publish; returns the folder written (default: `folder` itself)."""
    options = options or ReexportOptions()
    if options.kv_cache not in KV_CACHE_CHOICES:
        raise ValueError(f"kv_cache must be one of {KV_CACHE_CHOICES}")
    if options.weights != "float32" and options.weights not in CANDIDATES:
        raise ValueError(f"weights must be float32 or one of {CANDIDATES}")
    folder = Path(folder)
    out_dir = Path(out_dir) if out_dir else folder
    rebuilt = rebuild_artifact(folder)
    name, recipe, model = rebuilt.manifest["name"], rebuilt.recipe, rebuilt.model
    rebuild_diff = check_rebuild(rebuilt, tokens=options.greedy_tokens // 2)
    log.info("%s: rebuilt model matches the committed graph (max |diff| %.3g)", name, rebuild_diff)
    context = model.config.context_length
    train, val = recipe_streams(recipe, folder / TOKENIZER_FILE)

    base = fused_float32_graph(rebuilt)
    base_session = make_session(base, options.threads)
    diffs = parity.check_decoder(model, base_session)
    float32_nats = graph_nats_per_char(base_session, val, context)
    prompts = validation_prompts(val, options.greedy_prompts)
    float32_greedy = greedy_tokens(base_session, prompts, options.greedy_tokens)
    metrics: dict[str, Any] = {
        key: value
        for key, value in rebuilt.manifest.get("metrics", {}).items()
        if not key.startswith(("int8_cache_", "float32_cache_", "weight_candidates"))
    }
    metrics["float32_cache_val_nats_per_char"] = float32_nats

    geometry = {
        k: rebuilt.manifest["onnx"]["kv_cache"][k] for k in ("num_layers", "kv_heads", "head_dim", "max_len")
    }
    cpu_graph, cpu_cache = base, {**geometry, "dtype": "float32"}
    if options.kv_cache != "float32":
        windows = calibration_windows(train, context)
        scales = calibrate_scales(base_session, windows, options.quant_type)
        int8_graph = quantize_kv_cache(base, scales, options.quant_type)
        int8_session = make_session(int8_graph, options.threads)
        int8_nats = graph_nats_per_char(int8_session, val, context)
        metrics["int8_cache_val_nats_per_char"] = int8_nats
        metrics["int8_cache_greedy"] = greedy_agreement(
            greedy_tokens(int8_session, prompts, options.greedy_tokens), float32_greedy
        )
        diff, largest = cache_logit_diff(int8_session, base_session, prompts)
        if diff > INT8_CACHE_TOLERANCE * largest:
            raise parity.ParityError(
                f"int8 cache logits differ by {diff:.3g}, over {INT8_CACHE_TOLERANCE} of {largest:.3g}"
            )
        metrics["int8_cache_parity"] = {
            "max_abs_logit_diff": diff,
            "max_abs_logit": largest,
            "relative_tolerance": INT8_CACHE_TOLERANCE,
        }
        cost = int8_nats - float32_nats
        if options.kv_cache == "int8" or cost <= MAX_NATS_COST:
            cpu_graph = int8_graph
            cpu_cache = kv_cache_record(geometry, scales, options.quant_type, len(windows), context)
        log.info("%s: int8 cache costs %+.5f nats/char (%s)", name, cost, cpu_cache["dtype"])

    cpu_nats = metrics.get("int8_cache_val_nats_per_char") if cpu_cache["dtype"] == "int8" else float32_nats
    if options.measure_weight_candidates or options.weights != "float32":
        candidates = {}
        for candidate in CANDIDATES:
            if not options.measure_weight_candidates and candidate != options.weights:
                continue
            quantized = quantize_weights(cpu_graph, candidate)
            nats = graph_nats_per_char(make_session(quantized, options.threads), val, context)
            adopted = candidate == options.weights
            if adopted and nats - cpu_nats > MAX_NATS_COST:
                raise ValueError(f"{candidate} costs {nats - cpu_nats:+.4f} nats/char, over {MAX_NATS_COST}")
            candidates[candidate] = {"val_nats_per_char": nats, "delta": nats - cpu_nats, "adopted": adopted}
            if adopted:
                cpu_graph, cpu_nats = quantized, nats
        metrics["weight_candidates"] = candidates
    metrics["val_nats_per_char"] = cpu_nats
    metrics["val_nats_per_token"] = cpu_nats * val.chars / (val.tokens.size - 1)
    metrics["parity_max_abs_diff"] = max(diffs.values())
    metrics["rebuild_max_abs_diff"] = rebuild_diff

    cpu_section = section_of(cpu_graph, MODEL_FILE, cpu_cache, options.weights)
    variants: dict[str, Any] = {
        "cpu": {**cpu_section, "compute_dtype": "float32", "kv_cache_dtype": cpu_cache["dtype"]},
    }
    with published(out_dir) as staging:
        onnx.save_model(cpu_graph, str(staging / MODEL_FILE))
        if options.cuda_variant:
            half = float16_graph(base)
            onnx.save_model(half, str(staging / FLOAT16_FILE))
            half_cache = {**geometry, "dtype": "float16"}
            variants["cuda"] = {
                **section_of(half, FLOAT16_FILE, half_cache, "float16"),
                "compute_dtype": "float16",
                "kv_cache_dtype": "float16",
                "parity": float16_parity(
                    model,
                    make_session(staging / FLOAT16_FILE, options.threads),
                    prompts,
                    options.greedy_tokens,
                ),
            }
        shutil.copyfile(folder / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        training = {
            **rebuilt.manifest["training"],
            "reexport": {
                "from_sha256": rebuilt.manifest["files"][MODEL_FILE]["sha256"],
                "command": f"python -m training reexport {folder.as_posix()}",
                **{
                    k: v
                    for k, v in mf.training_section(None, [], None, None).items()
                    if k.endswith("_version")
                },
            },
        }
        manifest = mf.build_manifest(
            name=name,
            task="generate",
            architecture=rebuilt.manifest["architecture"],
            parameters=sum(p.numel() for p in model.parameters()),
            context_length=rebuilt.manifest["context_length"],
            onnx_info=cpu_section,
            tokenizer_info=rebuilt.manifest["tokenizer"],
            labels=None,
            metrics=metrics,
            training=training,
            folder=staging,
            chat=rebuilt.manifest.get("chat"),
        )
        files = manifest.pop("files")
        mf.write_manifest(staging, {**manifest, "variants": variants, "files": files})
    return out_dir


def declare_float32_variants(folder: Path) -> Path:
    """Give a recurrent or classifier artifact its `variants`: model.onnx (float32) serves CPU and CUDA,
    whose LSTM/GRU/RNN and MatMul kernels take float32. The manifest is not hashed: nothing is exported."""
    folder = Path(folder)
    manifest = json.loads((folder / mf.MANIFEST_FILE).read_text())
    if manifest["onnx"].get("kv_cache"):
        raise ValueError(f"{manifest['name']} is a KV-cache decoder: re-export it instead")
    onnx_section = manifest["onnx"]
    entry = {
        "file": onnx_section["file"],
        "compute_dtype": "float32",
        "kv_cache_dtype": None,
        "weights": onnx_section.get("weights", "float32"),
        "inputs": onnx_section["inputs"],
        "outputs": onnx_section["outputs"],
        "state": onnx_section.get("state"),
    }
    manifest = {k: v for k, v in manifest.items() if k not in ("variants", "files")}
    manifest["variants"] = {"cpu": entry, "cuda": entry}
    manifest["files"] = json.loads((folder / mf.MANIFEST_FILE).read_text())["files"]
    return mf.write_manifest(folder, manifest)
