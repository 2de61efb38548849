"""`make gpu-check`: the GPU path measured in one command (issue 13), in under 10 minutes.

`python -m bench.gpu_check` runs under any Python >= 3.11 with the standard library only: it checks
for a GPU before installing anything, builds its own venv with onnxruntime-gpu and
onnxruntime-genai-cuda, then runs each measurement (bench/gpu_check/steps/) in that venv as a child
process with its own time limit, so one step that fails or hangs leaves the others' results.
"""
