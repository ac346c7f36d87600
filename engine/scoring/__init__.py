"""The scoring model that runs on the line: encoders, memory bank, runtime model, builder,
text heads, prompts, thresholds and the saved model artefact.

May import engine.errors only; never engine.training
(tests/unit/engine/test_inference_imports.py checks).
"""
