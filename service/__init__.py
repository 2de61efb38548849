"""seqserve: serving of neural sequence models with onnxruntime.

The service side never imports torch; it reads only the artifact folders that training exports
(model.onnx, tokenizer.json, manifest.json; see docs/artifact-contract.md).
"""
