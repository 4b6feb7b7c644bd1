"""Evaluation: attacks, certificates of robustness, the end-to-end job and its report.

config.py      EvalConfig (radii, attack, lower-bound budget)
attacks.py     PGD in ℓ1, ℓ2, ℓ∞
certify.py     global and last-layer certificates; every certificate cross-checked by PGD
experiment.py  train → bound → certify → attack → report, shared by run / train / certify
report.py      metrics.json, report.md, the certified-accuracy plot
"""
