"""Training: configuration, losses, the penalty's estimate, objectives, the loop, checkpoints.

config.py      TrainConfig and the built-in defaults
losses.py      the loss registry (ce, margin, normalized-margin, offset, gloro, last-layer)
penalty.py     the differentiable trivial-bound estimate and the penalty forms
objectives.py  Objective, PenalizedObjective (tightlip's), BoundedObjective (baselines')
loop.py        the method-agnostic Adam loop with exact resume
checkpoint.py  safetensors + JSON checkpoints, nothing unpickled
"""
