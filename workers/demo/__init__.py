"""`clad demo`: the whole path on one machine on embedded defaults (broker, SQLite,
k-shot model from the demo's own references).

May import pipeline, engine and workers.streaming.
"""
