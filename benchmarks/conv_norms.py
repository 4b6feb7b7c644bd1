"""Convolution norms benchmark: how tight and how fast the sound operator norms are.

For convolutions at MNIST and CIFAR-10 sizes (random He-scaled kernels, fixed seed), it
reports the certified ℓ1, ℓ2 and ℓ∞ norms of :class:`tightlip.convolution.operators.Conv2dOperator`
and their time, and compares the ℓ2 bound with

* the exact norm, the float64 SVD of the dense matrix (applied to the identity), where that
  fits in memory and time; the ratio bound / exact is then the true looseness;
* otherwise a power-iteration estimate through ``apply`` / ``apply_transpose``, which is a
  *lower* estimate of the norm: bound / estimate over-states the looseness;

and the ℓ1 / ℓ∞ bounds (exact by construction) with the dense matrix's absolute sums where it
fits. The ℓ2 bound is the minimum of the Fourier bound (Sedghi, Gupta & Long, ICLR 2019, on the
smallest torus, polyphase for strides), Schur's ``√(‖A‖₁‖A‖_∞)``, the certified dense SVD on
small operators and the certified Gram route (:mod:`tightlip.convolution.gram`) on operators
with a side of at most 8192 coordinates; the table says which won and how far above it the
Fourier bound alone would have been.

    python benchmarks/conv_norms.py            # writes benchmarks/results/conv_norms.{md,json}
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from provenance import command, git_commit, hardware

from tightlip.convolution.operators import DENSE_SVD_LIMIT, Conv2dOperator
from tightlip.convolution.spectral import circulant_spectral_bound

RESULTS = Path(__file__).resolve().parent / "results"

# (name, c_in, c_out, kernel, image size, stride, padding, circular)
CASES = [
    ("MNIST 1→32 k3", 1, 32, 3, 28, 1, 1, False),
    ("MNIST 32→32 k4 s2 (4C3F conv2)", 32, 32, 4, 28, 2, 1, False),
    ("MNIST 32→64 k3 (4C3F conv3)", 32, 64, 3, 14, 1, 1, False),
    ("MNIST 64→64 k4 s2 (4C3F conv4)", 64, 64, 4, 14, 2, 1, False),
    ("MNIST 32→64 k4 s2", 32, 64, 4, 28, 2, 1, False),
    ("CIFAR 3→64 k3", 3, 64, 3, 32, 1, 1, False),
    ("CIFAR 64→128 k3", 64, 128, 3, 32, 1, 1, False),
    ("CIFAR 64→64 k3 circular", 64, 64, 3, 32, 1, 1, True),
    ("CIFAR 64→128 k3 s2", 64, 128, 3, 32, 2, 1, False),
]
#: the dense SVD reference is computed when m · n · min(m, n) is at most this
SVD_WORK_LIMIT = 2**35
#: the dense ℓ1/ℓ∞ reference is computed when the matrix has at most this many entries
DENSE_LIMIT = 2**26
POWER_ITERATIONS = 300


def power_estimate(op: Conv2dOperator, iterations: int, seed: int = 0) -> float:
    """``‖A v‖`` for ``v`` after power iteration on ``AᵀA``: a lower estimate of ``‖A‖₂``."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(1, op.in_features, generator=generator, dtype=torch.float64)
    for _ in range(iterations):
        v = op.apply_transpose(op.apply(v))
        v = v / v.norm()
    return float(op.apply(v).norm())


def run_case(case: tuple, seed: int) -> dict:
    name, c_in, c_out, k, size, stride, pad, circular = case
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.randn(c_out, c_in, k, k, generator=generator, dtype=torch.float64)
    kernel /= math.sqrt(c_in * k * k)
    op = Conv2dOperator(
        kernel, (c_in, size, size), stride=(stride, stride), padding=((pad, pad), (pad, pad)),
        circular=circular, name=name,
    )
    row: dict = {"name": name, "input": [c_in, size, size], "output": list(op.output_shape),
                 "kernel": k, "stride": stride, "padding": pad, "circular": circular}
    for norm in ("1", "inf"):
        started = time.perf_counter()
        row[f"l{norm}"] = op.certified_norm(norm)  # type: ignore[arg-type]
        row[f"l{norm}_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    row["l2"] = op.certified_norm("2")
    row["l2_seconds"] = time.perf_counter() - started
    fourier = circulant_spectral_bound(kernel, op.axes)
    schur = math.sqrt(row["l1"] * row["linf"])
    row.update(fourier=fourier, schur=schur, l2_by="Fourier" if fourier <= schur else "Schur")
    m, n = op.out_features, op.in_features
    if row["l2"] < fourier and row["l2"] < schur:
        row["l2_by"] = "dense SVD" if m * n * min(m, n) <= DENSE_SVD_LIMIT else "Gram"
    if m * n <= DENSE_LIMIT:
        dense = op.dense(None)
        row["l1_dense"] = float(dense.abs().sum(0).max())
        row["linf_dense"] = float(dense.abs().sum(1).max())
        if m * n * min(m, n) <= SVD_WORK_LIMIT:
            started = time.perf_counter()
            row["l2_reference"] = float(torch.linalg.svdvals(dense)[0])
            row["reference"] = "exact (dense SVD)"
            row["reference_seconds"] = time.perf_counter() - started
        del dense
    if "l2_reference" not in row:
        started = time.perf_counter()
        row["l2_reference"] = power_estimate(op, POWER_ITERATIONS)
        row["reference"] = f"power iteration ×{POWER_ITERATIONS} (lower estimate)"
        row["reference_seconds"] = time.perf_counter() - started
    row["ratio"] = row["l2"] / row["l2_reference"]
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Convolution norms benchmark",
        "",
        f"Command: `{meta['command']}` at commit `{meta['commit']}` on {meta['hardware']}; "
        f"{meta['seconds']:.0f} s in all. Random kernels N(0, 1/(c_in k²)), seed {meta['seed']}, "
        "padding 1 (zero unless circular).",
        "",
        "ℓ2: the certified bound (`certified_norm`: the least of the Fourier bound, Schur's "
        "√(‖A‖₁‖A‖∞), on small operators the certified dense SVD, and with a side of at most "
        "8192 coordinates the certified Gram matrix's top eigenvalue) against the "
        "exact norm (float64 SVD of the dense matrix) where computable, else against a "
        "power-iteration *lower* estimate (the ratio then over-states the looseness). ℓ1/ℓ∞ are "
        "exact by construction; where the dense matrix fits, its absolute sums agree.",
        "",
        "| convolution | in → out | ℓ2 bound | reference | bound / reference | ℓ2 won by "
        "| Fourier / bound | ℓ2 s | ℓ1 | ℓ∞ | ℓ1/ℓ∞ s | ℓ1/ℓ∞ = dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dense_check = (
            "yes" if "l1_dense" in r and math.isclose(r["l1"], r["l1_dense"], rel_tol=1e-12)
            and math.isclose(r["linf"], r["linf_dense"], rel_tol=1e-12)
            else ("no" if "l1_dense" in r else "—")
        )
        shape = f"{'×'.join(map(str, r['input']))} → {'×'.join(map(str, r['output']))}"
        lines.append(
            f"| {r['name']} | {shape} | {r['l2']:.6g} | {r['l2_reference']:.6g} "
            f"({r['reference']}) | **{r['ratio']:.4f}** | {r['l2_by']} | "
            f"{r['fourier'] / r['l2']:.4f} | {r['l2_seconds']:.2f} | {r['l1']:.5g} | {r['linf']:.5g} | "
            f"{r['l1_seconds'] + r['linf_seconds']:.3f} | {dense_check} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for case in CASES:
        rows.append(run_case(case, args.seed))
        r = rows[-1]
        print(f"{r['name']}: ℓ2 {r['l2']:.6g} / {r['l2_reference']:.6g} = {r['ratio']:.4f} "
              f"({r['l2_seconds']:.2f} s)", flush=True)
    meta = {"command": command(), "commit": git_commit(), "hardware": hardware(),
            "seed": args.seed, "seconds": time.perf_counter() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conv_norms.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (args.out / "conv_norms.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
