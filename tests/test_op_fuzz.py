"""Hostile arguments for the raw CPU ops: every call must end in a clean Python exception or a correct result.

The cases run in a subprocess (this file with ``--worker``), so that a segfault fails the test instead of killing
pytest. Each case calls ``torch.ops.sparsekit.csr_linear`` / ``bsr_linear`` (the public ops, Python checks
first) and the extension entry point ``sparsekit._C_cpu.linear`` directly (the C++ checks alone), and a packed
weight corrupted after packing goes through ``kernels.csr_linear`` / ``bsr_linear``. Valid cases must match the
reference. Also: the NaN / inf semantics (``sparsekit.kernels.reference``) on every ISA, CSR and BSR.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsekit import kernels
from sparsekit.kernels import reference

needs_ext = pytest.mark.skipif(not kernels.available(), reason="C++ CPU kernels not built")

ROOT = Path(__file__).resolve().parents[1]
I32_MAX = 2**31 - 1
CLEAN = (ValueError, TypeError, RuntimeError)  # TypeError: wrong dtypes / Python types


# =============================================================================================
# Case generation (runs in the worker)
# =============================================================================================
def _random_weight(gen: torch.Generator, out: int, inp: int, density: float) -> torch.Tensor:
    w = torch.randn(out, inp, generator=gen)
    return w * (torch.rand(out, inp, generator=gen) < density)


def _packed(gen: torch.Generator, kind: str, out: int, inp: int, chunk: int, block=(4, 1)):
    w = _random_weight(gen, out, inp, 0.3)
    return kernels.pack_cpu_csr(w, chunk=chunk) if kind == "csr" else kernels.pack_cpu_bsr(w, block=block, chunk=chunk)


def _args(p, x, bias=None) -> dict:
    out, inp = p.shape
    return {"x": x, "ptr": p.ptr, "col": p.col, "val": p.val, "in_features": inp, "out_features": out,
            "group_rows": p.group_rows, "chunk": p.chunk, "bias": bias}


def _noncontig(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t, t], dim=-1)[..., 0]


def hostile_cases(seed: int = 0) -> list[tuple[str, dict]]:
    """(name, op arguments) pairs that must be rejected."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[str, dict]] = []

    def add(name: str, a: dict, **change) -> None:
        cases.append((name, {**a, **change}))

    # the example: out=1, in=2, chunk=1 -> two runs; ptr = [0, 2**31-1, 1]
    one = {"x": torch.randn(3, 2, generator=gen), "ptr": torch.tensor([0, I32_MAX, 1], dtype=torch.int32),
           "col": torch.zeros(1, dtype=torch.uint8), "val": torch.ones(1), "in_features": 2, "out_features": 1,
           "group_rows": 1, "chunk": 1, "bias": None}
    add("issue-example ptr [0, 2**31-1, 1]", one)
    add("issue-example 1 token (GEMV)", one, x=torch.randn(1, 2, generator=gen))
    for kind, R, block in (("csr", 1, None), ("bsr", 2, (2, 1)), ("bsr", 4, (4, 2))):
        for chunk in (3, 64, 256):
            out = int(torch.randint(5, 40, (1,), generator=gen))
            inp = int(torch.randint(chunk // 2 + 2, 3 * chunk + 5, (1,), generator=gen))
            p = _packed(gen, kind, out, inp, chunk, block or (4, 1))
            m = int(torch.randint(1, 40, (1,), generator=gen))
            a = _args(p, torch.randn(m, inp, generator=gen), torch.randn(out, generator=gen))
            tag = f"{kind} R={R} chunk={chunk} {out}x{inp} M={m}"
            nr = p.ptr.numel() - 1
            nent = p.col.numel()
            k = int(torch.randint(1, max(nr, 2), (1,), generator=gen))

            def ptr_with(i: int, v: int, _p=p) -> torch.Tensor:
                q = _p.ptr.clone()
                q[i] = v
                return q

            add(f"{tag}: ptr[k] = 2**31-1", a, ptr=ptr_with(k, I32_MAX))
            add(f"{tag}: ptr[k] = -1", a, ptr=ptr_with(k, -1))
            add(f"{tag}: ptr[k] = -2**31", a, ptr=ptr_with(k, -(2**31)))
            add(f"{tag}: ptr[0] = 1", a, ptr=ptr_with(0, 1))
            add(f"{tag}: ptr[-1] = nent + 1", a, ptr=ptr_with(nr, nent + 1))
            add(f"{tag}: ptr[-1] = nent - 1", a, ptr=ptr_with(nr, max(nent - 1, 0) if nent else 1))
            if nent >= 2:
                q = p.ptr.clone()
                q[1:-1] = torch.flip(q[1:-1], dims=[0])  # non-monotone, same ends
                if not bool((q[1:] >= q[:-1]).all()):
                    add(f"{tag}: ptr reversed inside", a, ptr=q)
            add(f"{tag}: ptr too long", a, ptr=torch.cat([p.ptr, p.ptr[-1:]]))
            add(f"{tag}: ptr too short", a, ptr=p.ptr[:-1].clone())
            if nent:
                c = p.col.clone()
                c[-1] = 255
                run = int(torch.searchsorted(p.ptr, torch.tensor([nent - 1], dtype=torch.int32), right=True)) - 1
                j = run // p.ngroups  # chunk of the last entry; its offsets must be < limit
                limit = chunk if j < p.nchunks - 1 else inp - (p.nchunks - 1) * chunk
                if limit <= 255:
                    add(f"{tag}: col[-1] = 255 (offset past its chunk / in_features)", a, col=c)
                if p.nchunks > 1 and chunk < 256:
                    c = p.col.clone()
                    c[0] = chunk  # first entry lives in chunk 0: offset must be < chunk
                    add(f"{tag}: col[0] = chunk", a, col=c)
                add(f"{tag}: col as int8 with -1", a, col=torch.full_like(p.col, -1, dtype=torch.int8))
                add(f"{tag}: col as int64", a, col=p.col.long())
                add(f"{tag}: col too short (ptr end mismatch)", a, col=p.col[:-1].clone(),
                    val=p.val[:-R].clone())
                add(f"{tag}: val too short", a, val=p.val[:-1].clone())
                if nent >= 2:  # (a 1-element strided view is contiguous)
                    add(f"{tag}: col non-contiguous", a, col=_noncontig(p.col))
                    add(f"{tag}: val non-contiguous", a, val=_noncontig(p.val))
            add(f"{tag}: val float64", a, val=p.val.double())
            add(f"{tag}: ptr int64", a, ptr=p.ptr.long())
            add(f"{tag}: ptr non-contiguous", a, ptr=_noncontig(p.ptr))
            add(f"{tag}: ptr 2-D", a, ptr=p.ptr[None, :])
            add(f"{tag}: x float64", a, x=a["x"].double())
            add(f"{tag}: x wrong width", a, x=torch.randn(m, inp + 1, generator=gen))
            add(f"{tag}: x 0-d", a, x=torch.tensor(1.0))
            add(f"{tag}: bias wrong length", a, bias=torch.randn(out + 1, generator=gen))
            add(f"{tag}: bias float16", a, bias=a["bias"].half())
            add(f"{tag}: bias 2-D", a, bias=a["bias"][None, :])
            add(f"{tag}: in_features + 1", a, in_features=inp + 1)
            add(f"{tag}: out_features + R", a, out_features=out + R)
            other = chunk + 1 if chunk < 256 else 255
            if -(-inp // other) != p.nchunks:
                add(f"{tag}: chunk {other} (another chunk count)", a, chunk=other)
            add(f"{tag}: chunk 0", a, chunk=0)
            add(f"{tag}: chunk 257", a, chunk=257)
            add(f"{tag}: huge in_features 2**31-1", a, in_features=I32_MAX)
            add(f"{tag}: huge out_features 2**31-1", a, out_features=I32_MAX)
            add(f"{tag}: in_features 2**40", a, in_features=2**40)
            add(f"{tag}: in_features -1", a, in_features=-1)
            add(f"{tag}: group_rows 3", a, group_rows=3)
    return cases


def valid_cases(seed: int = 1) -> list[tuple[str, dict, object]]:
    """(name, op arguments, packed weight) that must run and match the reference."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for kind, block in (("csr", None), ("bsr", (4, 1)), ("bsr", (2, 3))):
        for out, inp, m, chunk in ((17, 300, 1, 64), (8, 10, 2, 3), (33, 257, 40, 256), (5, 7, 0, 4),
                                   (0, 9, 3, 4), (6, 0, 3, 8)):
            p = _packed(gen, kind, out, inp, chunk, block or (4, 1))
            x = torch.randn(m, inp, generator=gen)
            cases.append((f"{kind} {block} {out}x{inp} M={m} chunk={chunk}", _args(p, x, torch.randn(out)), p))
            cases.append((f"{kind} {block} {out}x{inp} M={m} chunk={chunk} x non-contiguous",
                          _args(p, _noncontig(x) if m else x), p))
    return cases


def _call_op(a: dict) -> torch.Tensor:
    if a["group_rows"] == 1:
        return torch.ops.sparsekit.csr_linear(a["x"], a["ptr"], a["col"], a["val"], a["in_features"],
                                              a["out_features"], a["chunk"], a["bias"])
    return torch.ops.sparsekit.bsr_linear(a["x"], a["ptr"], a["col"], a["val"], a["in_features"],
                                          a["out_features"], a["group_rows"], a["chunk"], a["bias"])


def _call_ext(a: dict) -> torch.Tensor:
    from sparsekit import _C_cpu

    x = a["x"] if a["x"].dim() == 2 else a["x"].reshape(-1, max(a["x"].shape[-1:] or [1]))
    return _C_cpu.linear(x, a["ptr"], a["col"], a["val"], a["in_features"], a["out_features"], a["group_rows"],
                         a["chunk"], a["bias"], kernels.isa())


def _outcome(fn, a: dict) -> dict:
    try:
        fn(a)
    except Exception as exc:  # noqa: BLE001 -- recorded and judged by the parent
        return {"raised": type(exc).__name__, "clean": isinstance(exc, CLEAN), "msg": str(exc).splitlines()[0][:200]}
    return {"raised": None}


def _corrupted_packed_cases(seed: int = 2) -> list[tuple[str, object, torch.Tensor]]:
    """Packed weights modified in place after packing (the packed-handle path skips the Python op checks)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for kind in ("csr", "bsr"):
        for what in ("ptr", "col"):
            p = _packed(gen, kind, 20, 100, 32)
            if what == "ptr":
                p.ptr[3] = I32_MAX
            else:
                p.col[-1] = 200
            out.append((f"packed {kind} with {what} modified after packing", p, torch.randn(7, 100, generator=gen)))
    return out


def worker() -> None:
    """Runs every case; prints one JSON line per case (flushed before the call, so a crash names its case)."""
    torch.manual_seed(0)
    for name, a in hostile_cases():
        for via, fn in (("op", _call_op), ("ext", _call_ext)):
            print(json.dumps({"case": name, "via": via, "start": True}), flush=True)
            print(json.dumps({"case": name, "via": via, "hostile": True, **_outcome(fn, a)}), flush=True)
    for name, p, x in _corrupted_packed_cases():
        fn = kernels.csr_linear if p.kind == "csr" else kernels.bsr_linear
        print(json.dumps({"case": name, "via": "packed", "start": True}), flush=True)
        print(json.dumps({"case": name, "via": "packed", "hostile": True,
                          **_outcome(lambda _a, fn=fn, p=p, x=x: fn(x, p), {})}), flush=True)
    for name, a, p in valid_cases():
        for via, fn in (("op", _call_op), ("ext", _call_ext)):
            print(json.dumps({"case": name, "via": via, "start": True}), flush=True)
            try:
                y = fn(a)
                ref = reference.bsr_linear(a["x"], p.ptr, p.col, p.val, p.shape[1], p.shape[0], p.group_rows,
                                           p.chunk, a["bias"])
                err = float((y - ref).abs().max()) if y.numel() else 0.0
                scale = float(ref.abs().max()) + 1.0 if ref.numel() else 1.0
                res = {"raised": None, "ok": tuple(y.shape) == tuple(ref.shape) and err <= 1e-5 * scale,
                       "err": err}
            except Exception as exc:  # noqa: BLE001
                res = {"raised": type(exc).__name__, "msg": str(exc).splitlines()[0][:200], "ok": False}
            print(json.dumps({"case": name, "via": via, "hostile": False, **res}), flush=True)


# =============================================================================================
# Tests
# =============================================================================================
@needs_ext
def test_hostile_arguments_raise_cleanly_in_a_subprocess():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        last = next((r for r in reversed(lines) if r.get("start")), None)
        pytest.fail(f"worker died with return code {proc.returncode} (a crash) during {last}\n{proc.stderr[-3000:]}")
    results = [r for r in lines if not r.get("start")]
    hostile = [r for r in results if r["hostile"]]
    valid = [r for r in results if not r["hostile"]]
    assert len(hostile) >= 200 and len(valid) >= 30, (len(hostile), len(valid))  # ~100 argument sets x 2 paths
    not_raised = [r for r in hostile if r["raised"] is None]
    unclean = [r for r in hostile if r["raised"] is not None and (not r["clean"] or not r["msg"].strip())]
    assert not not_raised, f"hostile arguments accepted: {not_raised[:5]}"
    assert not unclean, f"unclean exceptions: {unclean[:5]}"
    wrong = [r for r in valid if not r["ok"]]
    assert not wrong, f"valid cases failed or differ from the reference: {wrong[:5]}"


@needs_ext
def test_error_messages_say_what_is_wrong():
    a = hostile_cases()[0][1]  # the example
    with pytest.raises(ValueError, match=r"ptr must be non-decreasing, got ptr\[1\] = 2147483647 > ptr\[2\] = 1"):
        _call_op(a)
    gen = torch.Generator().manual_seed(3)
    p = _packed(gen, "csr", 8, 10, 4)
    col = p.col.clone()
    col[-1] = 3  # the last chunk holds columns 8..9
    with pytest.raises(ValueError, match=r"column index out of range: entry \d+ \(chunk 2.*column 11.*8 \.\. 9"):
        _call_op({**_args(p, torch.randn(2, 10)), "col": col})
    q = p.ptr.clone()
    q[-1] += 1
    with pytest.raises(ValueError, match="ptr\\[-1\\] must equal the number of entries"):
        _call_ext({**_args(p, torch.randn(2, 10)), "ptr": q})


@needs_ext
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
@pytest.mark.parametrize("m", [1, 2, 5, 40])
def test_nonfinite_x_propagates_only_through_stored_nonzero_weights(isa, m):
    if isa not in kernels.supported_isas():
        pytest.skip(f"CPU lacks {isa}")
    gen = torch.Generator().manual_seed(m)
    out, inp = 24, 70
    w = _random_weight(gen, out, inp, 0.2)
    w[:, 5] = 0.0  # column 5: no stored weight at all
    w[::4, 9] = 0.0
    w[1::4, 9] = 2.0  # column 9: inside (4, 1) blocks with explicit zeros next to non-zeros
    x = torch.randn(m, inp, generator=gen)
    x[:, 5] = float("nan")
    x[0, 9] = float("nan")
    if m > 1:
        x[1, 9] = float("inf")
    b = torch.randn(out, generator=gen)
    with kernels.force_isa(isa):
        for packed in (kernels.pack_cpu_csr(w, chunk=32), kernels.pack_cpu_bsr(w, block=(4, 1), chunk=32),
                       kernels.pack_cpu_bsr(w, block=(2, 1))):
            y = kernels.csr_linear(x, packed, b) if packed.kind == "csr" else kernels.bsr_linear(x, packed, b)
            ref = reference.bsr_linear(x, packed.ptr, packed.col, packed.val, inp, out, packed.group_rows,
                                       packed.chunk, b)
            torch.testing.assert_close(y, ref, equal_nan=True, rtol=1e-5, atol=1e-5)
            # the rule itself: rows with w[:, 9] == 0 stay finite; others see the NaN / inf of column 9
            assert bool(torch.isfinite(y[0, ::4]).all())
            assert bool(torch.isnan(y[0, 1::4]).all())
            if m > 1:
                assert bool(torch.isinf(y[1, 1::4]).all()) and bool(torch.isfinite(y[1, ::4]).all())
            if m > 2:
                assert bool(torch.isfinite(y[2:]).all())


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker()
