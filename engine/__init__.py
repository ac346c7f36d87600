"""The anomaly engine, one subpackage per role; it imports neither pipeline nor workers.

Inference side: scoring (the model on the line), defects (regions, descriptions) and
runtime (backends); training and evaluation build on it, never the other way round.
"""
