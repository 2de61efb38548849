"""The GPU check's measurements, one module per step, each run in the GPU venv as
`python -m bench.gpu_check.steps NAME` (steps/__main__.py) and returning a JSON-able dict."""
