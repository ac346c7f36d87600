"""Defect regions of an anomaly map, their masks (RLE) and what kind each one is
(region describer, vocabularies, the shipped default describer's weights).

May import engine.scoring and engine.errors; never engine.training.
"""
