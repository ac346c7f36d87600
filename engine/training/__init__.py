"""Training: the CLAD heads' objective on synthetic defects, MVTec-layout datasets,
fine-tuning from operator labels, and the region describer's training.

May import engine.scoring and engine.defects; the inference side never imports this.
"""
