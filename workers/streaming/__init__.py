"""The streaming inference worker: consume frames, micro-batch, decode, infer, deliver
verdicts and events, commit offsets, hot-reload models, Prometheus metrics.

May import pipeline, engine's inference side (scoring, defects, runtime).
"""
