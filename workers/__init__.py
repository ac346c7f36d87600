"""The processes and the `clad` command line: streaming/ (the inference worker), api/
(operator API and console), retraining/, demo/, cli/.

Imports pipeline and engine; neither imports workers.
"""
