"""Why compile pads compacted heads to a multiple of 8: PyTorch's CPU attention (SDPA) time vs head width.

Batch 8 x 12 heads x 128 tokens, fp32, median of timed runs after warm-up, widths measured interleaved.
Writes benchmarks/results/sdpa_head_width.json.

    python benchmarks/sdpa_head_width.py
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from sparsekit.machine import header
from sparsekit.timing import measure_interleaved

from results_io import RESULTS, write_result  # benchmarks/ is on sys.path when run as a script

WIDTHS = (16, 23, 24, 25, 30, 32)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    qkv = {d: [torch.randn(8, 12, 128, d, generator=g) for _ in range(3)] for d in WIDTHS}
    mask = torch.ones(8, 1, 1, 128, dtype=torch.bool)
    fns = {str(d): (lambda t=t: F.scaled_dot_product_attention(*t, attn_mask=mask, scale=0.125))
           for d, t in qkv.items()}
    best = measure_interleaved(fns, rounds=2, warmup=3, repeats=20, min_seconds=0.5)
    rows = {d: 1e3 * r["median"] for d, r in best.items()}
    result = {**header(), "command": "python benchmarks/sdpa_head_width.py", "median_ms_by_head_width": rows}
    write_result(RESULTS / "sdpa_head_width", result)
    for d, ms in rows.items():
        print(f"head width {d:>3}: {ms:.2f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
