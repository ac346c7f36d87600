"""Offline evaluation: metrics (AUROC, AUPRO, F1-max), k-shot evaluation of the scoring
model, description accuracy and region IoU.

May import any engine package; nothing on the line imports this.
"""
