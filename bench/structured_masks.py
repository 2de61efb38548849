"""`python -m bench.structured_masks`: mask time per token of llguidance, xgrammar and outlines-core on
the committed models' own tokenizer.json files (byte-level BPE, 2048 tokens).

Each library compiles the same JSON schema and the same regex, then walks the model tokenizer's own
tokenization of one valid output: at each position it computes the allowed-token mask (timed) and
consumes the token (timed apart). A few seconds in all; the figures are in docs/api.md. xgrammar
imports torch on import, so it is measured in a subprocess and never loaded by the service.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0},
        "house": {"enum": ["Montague", "Capulet", "Escalus"]},
        "lines": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "alive": {"type": "boolean"},
    },
    "required": ["name", "age", "house", "lines", "alive"],
    "additionalProperties": False,
}
SCHEMA_TEXT = '{"name":"Romeo","age":17,"house":"Montague","lines":["But soft","what light"],"alive":false}'
REGEX = r"(ROMEO|JULIET|MERCUTIO): [A-Z][a-z]+( [a-z]+){2,6}\."
REGEX_TEXT = "JULIET: Wherefore art thou romeo."
CASES = {"json_schema": SCHEMA_TEXT, "regex": REGEX_TEXT}


def byte_level_vocab(tokenizer_json: Path) -> tuple[list[str], list[bytes], set[int], int]:
    """Tokens in id order (byte-level spelling), their bytes, the special ids, and the eos id."""
    data = json.loads(tokenizer_json.read_text())
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    specials = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    for t in data.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    spelled = [""] * (max(vocab.values()) + 1)
    for text, idx in vocab.items():
        spelled[idx] = text
    # GPT-2's byte <-> printable character table, as the ByteLevel pre-tokenizer uses.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    to_byte = {chr(c): b for b, c in zip(printable, chars, strict=True)}
    as_bytes = [b"" if i in specials else bytes(to_byte[ch] for ch in tok) for i, tok in enumerate(spelled)]
    eos = next((t["id"] for t in data.get("added_tokens", []) if t["content"] == "<|eos|>"), 2)
    return spelled, as_bytes, specials, eos


def target_tokens(tokenizer_json: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json)).encode(text, add_special_tokens=False).ids


def summary(mask_s: list[float], commit_s: list[float], compile_s: float) -> dict[str, float]:
    return {
        "compile_ms": round(compile_s * 1e3, 3),
        "mask_us_median": round(statistics.median(mask_s) * 1e6, 1),
        "mask_us_mean": round(statistics.fmean(mask_s) * 1e6, 1),
        "mask_us_max": round(max(mask_s) * 1e6, 1),
        "commit_us_median": round(statistics.median(commit_s) * 1e6, 1),
        "tokens": len(mask_s),
    }


def measure_llguidance(tokenizer_json: Path, repeats: int) -> dict[str, Any]:
    import llguidance
    import llguidance.numpy as lnp

    tok = llguidance.LLTokenizer(tokenizer_json.read_text())
    out: dict[str, Any] = {}
    for case, text in CASES.items():
        grammar = (
            llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA))
            if case == "json_schema"
            else llguidance.LLMatcher.grammar_from_regex(REGEX)
        )
        ids = target_tokens(tokenizer_json, text)
        mask = lnp.allocate_token_bitmask(1, tok.vocab_size)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            matcher = llguidance.LLMatcher(tok, grammar)
            compile_s = time.perf_counter() - t0
            assert not matcher.is_error(), matcher.get_error()
            mask_s, commit_s = [], []
            for token in ids:
                t0 = time.perf_counter()
                lnp.fill_next_token_bitmask(matcher, mask)
                t1 = time.perf_counter()
                assert (int(mask[0, token // 32]) >> (token % 32)) & 1, "target token masked out"
                ok = matcher.consume_token(token)
                commit_s.append(time.perf_counter() - t1)
                mask_s.append(t1 - t0)
                assert ok, matcher.get_error()
            runs.append(summary(mask_s, commit_s, compile_s))
        out[case] = min(runs, key=lambda r: r["mask_us_median"])
    return out


def measure_outlines(tokenizer_json: Path, repeats: int) -> dict[str, Any]:
    import numpy as np
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    _, as_bytes, specials, eos = byte_level_vocab(tokenizer_json)
    table: dict[bytes, list[int]] = {}
    for i, b in enumerate(as_bytes):
        if i not in specials and b:
            table.setdefault(b, []).append(i)
    vocab = Vocabulary(eos, table)
    out: dict[str, Any] = {}
    for case, text in CASES.items():
        regex = build_regex_from_schema(json.dumps(SCHEMA)) if case == "json_schema" else REGEX
        ids = target_tokens(tokenizer_json, text)
        mask = np.zeros((len(as_bytes) + 31) // 32, dtype=np.int32)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            index = Index(regex, vocab)
            guide = Guide(index)
            compile_s = time.perf_counter() - t0
            mask_s, commit_s = [], []
            for token in ids:
                t0 = time.perf_counter()
                guide.write_mask_into(mask.ctypes.data, mask.size, mask.itemsize)
                t1 = time.perf_counter()
                guide.advance(token, return_tokens=False)
                commit_s.append(time.perf_counter() - t1)
                mask_s.append(t1 - t0)
            runs.append(summary(mask_s, commit_s, compile_s))
        out[case] = min(runs, key=lambda r: r["mask_us_median"])
    return out


def measure_xgrammar(tokenizer_json: Path, repeats: int) -> dict[str, Any]:
    import xgrammar as xgr

    spelled, _, _, eos = byte_level_vocab(tokenizer_json)
    info = xgr.TokenizerInfo(
        spelled, vocab_type=xgr.VocabType.BYTE_LEVEL, vocab_size=len(spelled), stop_token_ids=[eos]
    )
    out: dict[str, Any] = {}
    for case, text in CASES.items():
        ids = target_tokens(tokenizer_json, text)
        mask = xgr.allocate_token_bitmask(1, info.vocab_size)
        runs = []
        for _ in range(repeats):
            compiler = xgr.GrammarCompiler(info, cache_enabled=False)
            t0 = time.perf_counter()
            compiled = (
                compiler.compile_json_schema(json.dumps(SCHEMA))
                if case == "json_schema"
                else compiler.compile_regex(REGEX)
            )
            matcher = xgr.GrammarMatcher(compiled)
            compile_s = time.perf_counter() - t0
            mask_s, commit_s = [], []
            for token in ids:
                t0 = time.perf_counter()
                matcher.fill_next_token_bitmask(mask)
                t1 = time.perf_counter()
                ok = matcher.accept_token(token)
                commit_s.append(time.perf_counter() - t1)
                mask_s.append(t1 - t0)
                assert ok, f"xgrammar refused token {token}"
            runs.append(summary(mask_s, commit_s, compile_s))
        out[case] = min(runs, key=lambda r: r["mask_us_median"])
    return out


MEASURES = {"llguidance": measure_llguidance, "outlines-core": measure_outlines, "xgrammar": measure_xgrammar}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models",
        nargs="*",
        type=Path,
        default=[Path("exported_models/shakespeare-gpt"), Path("exported_models/shakespeare-lstm")],
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(MEASURES), help="one library (the subprocess mode)")
    args = parser.parse_args()
    if args.only:  # child: print one library's figures as JSON
        figures = {str(m): MEASURES[args.only](m / "tokenizer.json", args.repeats) for m in args.models}
        print(json.dumps(figures))
        return
    results: dict[str, Any] = {}
    for library in MEASURES:  # one process each: xgrammar's torch import stays out of the others
        cmd = [sys.executable, "-m", "bench.structured_masks", "--only", library]
        cmd += ["--repeats", str(args.repeats), "--models", *map(str, args.models)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            results[library] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        results[library] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    header = ("library", "model", "case", "compile ms", "mask us median", "mean", "max")
    print("\n" + " | ".join(header))
    for library, per_model in results.items():
        if "error" in per_model:
            print(f"{library:14} error: {per_model['error']}")
            continue
        for model, cases in per_model.items():
            for case, r in cases.items():
                row = (library, Path(model).name, case, r["compile_ms"], r["mask_us_median"])
                print(" | ".join(map(str, (*row, r["mask_us_mean"], r["mask_us_max"]))))


if __name__ == "__main__":
    main()
