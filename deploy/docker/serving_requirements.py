"""Print the serving requirements of pyproject.toml for one execution provider.

The image installs exactly the project's core dependencies (no extras, so never torch). On CUDA,
onnxruntime is swapped for onnxruntime-gpu at the same pin: both wheels provide the same
`onnxruntime` module, so exactly one of them may be installed. Standard library only, because it
runs in the image's builder stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ONNXRUNTIME_FOR_PROVIDER = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalised(name: str) -> str:
    """PEP 503 name normalisation, so `ONNXRuntime` and `onnxruntime` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_requirements(pyproject: dict, provider: str) -> list[str]:
    """Return the core dependencies with onnxruntime replaced by the provider's wheel."""
    if provider not in ONNXRUNTIME_FOR_PROVIDER:
        raise ValueError(f"provider must be one of {sorted(ONNXRUNTIME_FOR_PROVIDER)}, not {provider!r}")
    wanted = ONNXRUNTIME_FOR_PROVIDER[provider]
    requirements: list[str] = []
    found = False
    for requirement in pyproject["project"]["dependencies"]:
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"cannot read the package name of {requirement!r}")
        if _normalised(match.group(1)) in {_normalised(name) for name in ONNXRUNTIME_FOR_PROVIDER.values()}:
            found = True
            requirement = wanted + requirement[match.end() :]
        requirements.append(requirement.strip())
    if not found:
        raise ValueError("pyproject.toml has no onnxruntime dependency to pin the provider's wheel to")
    return requirements


def main(argv: list[str] | None = None) -> int:
    """CLI: `serving_requirements.py --provider cuda pyproject.toml > requirements.txt`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--provider", choices=sorted(ONNXRUNTIME_FOR_PROVIDER), required=True)
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as handle:
        pyproject = tomllib.load(handle)
    sys.stdout.write("".join(f"{line}\n" for line in serving_requirements(pyproject, args.provider)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
