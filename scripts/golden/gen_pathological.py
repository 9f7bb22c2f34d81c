#!/usr/bin/python3
"""Generates tests/data/batch_norm_pathological.json: random and pathological batch-norm cases,
with PyTorch's values and the exact values, for tests/functional/batch_norm_pathological_test.cc.

Run with Debian's python3-torch (1.13):  /usr/bin/python3 scripts/golden/gen_pathological.py
The output is committed; the tests never need torch.

Each case is a random shape (rank 2-5, at most a few hundred values, channels-last for half of the
rank-4/5 ones), dtype, eps (0 included), momentum (0 and 1 included), affine and running-statistics
choice, and a data kind that breaks naive kernels: means 1e3-1e9 over spreads 1e-3-10, constant
channels (eps 0 gives PyTorch's invstd 0 rule), |x| ~ 1e30 (squares overflow float32), |x| ~ 1e-30
(squares underflow float32), per-channel scales 1e-6-1e6, small integers, mostly zeros, ±inf/NaN
sprinkled, and dy sometimes ~3e6 ± 1e6 (dx cancels). Fields:

  torch values, in the case's dtype: y, save_mean, save_invstd, dx, dweight, dbias, running_mean,
    running_var (torch.native_batch_norm in training mode and its backward), and y_eval, dx_eval,
    dweight_eval, dbias_eval (evaluation mode with the *input* running statistics);
  "exact_" + each of them: the same quantity computed in exact rational arithmetic (square roots
    to 50 digits) from the inputs as stored, then rounded to double. In a channel whose data hold
    ±inf or NaN there is no exact value to compute: there the exact_ fields hold what PyTorch's
    float64 computation gives on the same data (the non-finite semantics bnorm follows).

Non-finite numbers are written as the strings "nan", "inf", "-inf" (JSON has no literal for them).
"""
import json
import math
import os
import random
import sys
from decimal import Decimal, getcontext
from fractions import Fraction

import torch

from tensor_lists import flat, fmt_layout

SEED = 20261208
CASES = 160
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                   "batch_norm_pathological.json")
getcontext().prec = 50
rng = random.Random(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)

KINDS = ["randn", "offset", "bigoffset", "const", "huge", "tiny", "scaled", "int", "sparse",
         "nonfinite", "mixed"]


def enc(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def rand_shape():
    rank = rng.choice([2, 2, 3, 4, 4, 4, 5])
    total = 2 ** rng.uniform(1, 8.5)
    c = rng.choice([1, 2, 3, 4, 7, 8, 9, 16, 17, 33])
    while c > total / 2 and c > 1:
        c = max(1, c // 3)
    rest = max(2, int(total / c))
    dims = []
    for _ in range(rank - 2):
        d = max(1, int(round(rest ** rng.uniform(0.1, 0.6))))
        dims.append(d)
        rest = max(1, rest // d)
    n = 1 if rng.random() < 0.1 else max(1, rest)
    if n * math.prod(dims) < 2:
        n = 2
    return [n, c] + dims


def make_x(shape, kind):
    c = shape[1]
    bshape = [1, c] + [1] * (len(shape) - 2)
    f64 = torch.float64
    x = torch.randn(shape, dtype=f64)
    if kind == "offset":
        x = x * 0.5 + 1e3
    elif kind == "bigoffset":
        m = 10 ** torch.empty(bshape, dtype=f64).uniform_(3, 9)
        s = 10 ** torch.empty(bshape, dtype=f64).uniform_(-3, 1)
        x = x * s + m * torch.sign(torch.randn(bshape, dtype=f64))
    elif kind == "const":
        v = torch.randn(bshape, dtype=f64) * 10 ** rng.uniform(-3, 7)
        mask = (torch.rand(bshape) < 0.5).to(f64)
        x = x * (1 - mask) + v.expand(shape) * mask
    elif kind == "huge":
        x = x * 1e30 * 10 ** torch.empty(bshape, dtype=f64).uniform_(-2, 0.5)
    elif kind == "tiny":
        x = x * 1e-30
    elif kind == "scaled":
        x = x * 10 ** torch.empty(bshape, dtype=f64).uniform_(-6, 6)
    elif kind == "int":
        x = torch.randint(-3, 4, shape).to(f64)
    elif kind == "sparse":
        x = x * (torch.rand(shape) < 0.1)
    elif kind == "nonfinite":
        r = torch.rand(shape)
        x = torch.where(r < 0.02, torch.tensor(float("nan"), dtype=f64), x)
        x = torch.where((r >= 0.02) & (r < 0.04), torch.tensor(float("inf"), dtype=f64), x)
        x = torch.where((r >= 0.04) & (r < 0.06), torch.tensor(float("-inf"), dtype=f64), x)
    elif kind == "mixed":
        x = (x * 10 ** torch.empty(bshape, dtype=f64).uniform_(-2, 2) +
             torch.randn(bshape, dtype=f64) * 10 ** rng.uniform(0, 5))
    return x


def dec(q):
    """A Fraction as a 50-digit Decimal."""
    return Decimal(q.numerator) / Decimal(q.denominator)


def exact_case(shape, x, dy, w, b, rm0, rv0, momentum, eps, torch64):
    """Exact values in logical order; channels with non-finite data take torch64's."""
    n, c = shape[0], shape[1]
    s = math.prod(shape[2:])
    count = n * s
    out = {k: [None] * len(v) for k, v in torch64.items()}

    def idx(ch):
        return [(i * c + ch) * s + j for i in range(n) for j in range(s)]

    for ch in range(c):
        ii = idx(ch)
        xs = [x[k] for k in ii]
        if not all(math.isfinite(v) for v in xs):
            for k, v in torch64.items():
                for pos in (ii if len(v) == len(x) else [ch]):
                    out[k][pos] = v[pos]
            continue
        xq = [Fraction(v) for v in xs]
        gq = [Fraction(dy[k]) for k in ii]
        mean = sum(xq) / count
        var = sum((v - mean) ** 2 for v in xq) / count
        invstd = Decimal(0) if var == 0 and eps == 0 else 1 / (dec(var) + Decimal(eps)).sqrt()
        wc = Decimal(w[ch]) if w is not None else Decimal(1)
        bc = Decimal(b[ch]) if b is not None else Decimal(0)
        sum_dy = sum(gq)
        dot = sum((v - mean) * g for v, g in zip(xq, gq))
        k = dec(dot) * invstd * invstd / count
        for pos, v, g in zip(ii, xq, gq):
            xm = dec(v - mean)
            out["y"][pos] = float(xm * invstd * wc + bc)
            out["dx"][pos] = float((dec(g) - dec(sum_dy) / count - xm * k) * invstd * wc)
        out["save_mean"][ch] = float(dec(mean))
        out["save_invstd"][ch] = float(invstd)
        if "dweight" in out:
            out["dweight"][ch] = float(dec(dot) * invstd)
            out["dbias"][ch] = float(dec(sum_dy))
        if "running_mean" in out:
            m = Fraction(momentum)
            out["running_mean"][ch] = float(dec((1 - m) * Fraction(rm0[ch]) + m * mean))
            out["running_var"][ch] = float(
                dec((1 - m) * Fraction(rv0[ch]) + m * var * count / (count - 1)))
            ie = 1 / (Decimal(rv0[ch]) + Decimal(eps)).sqrt()
            dot_e = sum((v - Fraction(rm0[ch])) * g for v, g in zip(xq, gq))
            for pos, v, g in zip(ii, xq, gq):
                out["y_eval"][pos] = float(dec(v - Fraction(rm0[ch])) * ie * wc + bc)
                out["dx_eval"][pos] = float(dec(g) * ie * wc)
            if "dweight_eval" in out:
                out["dweight_eval"][ch] = float(dec(dot_e) * ie)
                out["dbias_eval"][ch] = float(dec(sum_dy))
    return out


def run_torch(x, dy, w, b, rm0, rv0, dtype, channels_last, momentum, eps, affine, running):
    xx = fmt_layout(x.to(dtype), channels_last)
    dyy = fmt_layout(dy.to(dtype), channels_last)
    ww = w.to(dtype) if affine else None
    bb = b.to(dtype) if affine else None
    rm = rm0.to(dtype).clone() if running else None
    rv = rv0.to(dtype).clone() if running else None
    y, sm, si = torch.native_batch_norm(xx, ww, bb, rm, rv, True, momentum, eps)
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(dyy, xx, ww, rm, rv, sm, si, True, eps,
                                                          [True, affine, affine])
    out = {"y": flat(y), "save_mean": flat(sm), "save_invstd": flat(si), "dx": flat(dx)}
    if affine:
        out["dweight"], out["dbias"] = flat(dw), flat(db)
    if running:
        out["running_mean"], out["running_var"] = flat(rm), flat(rv)
        rm_in, rv_in = rm0.to(dtype), rv0.to(dtype)
        ye, _, _ = torch.native_batch_norm(xx, ww, bb, rm_in, rv_in, False, momentum, eps)
        dxe, dwe, dbe = torch.ops.aten.native_batch_norm_backward(
            dyy, xx, ww, rm_in, rv_in, None, None, False, eps, [True, affine, affine])
        out["y_eval"], out["dx_eval"] = flat(ye), flat(dxe)
        if affine:
            out["dweight_eval"], out["dbias_eval"] = flat(dwe), flat(dbe)
    return out


def make_case(i):
    shape = rand_shape()
    c = shape[1]
    dtype = rng.choice([torch.float32, torch.float32, torch.float64])
    channels_last = len(shape) >= 4 and rng.random() < 0.5
    kind = KINDS[i % len(KINDS)]
    affine = rng.random() < 0.8
    running = rng.random() < 0.8
    momentum = rng.choice([0.1, 0.1, 0.0, 1.0, round(rng.random(), 3)])
    eps = rng.choice([1e-5, 1e-5, 1e-3, 0.1, 0.0, 1e-12])
    x = make_x(shape, kind).to(dtype).to(torch.float64)
    dy = torch.randn(shape, dtype=torch.float64)
    if rng.random() < 0.2:
        dy = dy * 1e6 + 3e6
    dy = dy.to(dtype).to(torch.float64)
    w = (torch.randn(c, dtype=torch.float64) * 2).to(dtype).to(torch.float64)
    if rng.random() < 0.2:
        w[0] = 0
    b = torch.randn(c, dtype=torch.float64).to(dtype).to(torch.float64)
    rm0 = torch.randn(c, dtype=torch.float64).to(dtype).to(torch.float64)
    rv0 = (torch.rand(c, dtype=torch.float64) + 0.5).to(dtype).to(torch.float64)
    ours = run_torch(x, dy, w, b, rm0, rv0, dtype, channels_last, momentum, eps, affine, running)
    t64 = run_torch(x, dy, w, b, rm0, rv0, torch.float64, channels_last, momentum, eps, affine,
                    running)
    exact = exact_case(shape, flat(x), flat(dy), flat(w) if affine else None,
                       flat(b) if affine else None, flat(rm0), flat(rv0), momentum, eps, t64)
    case = {"name": f"case{i}_{kind}", "kind": kind, "shape": shape, "dtype": str(dtype)[6:],
            "channels_last": channels_last, "momentum": momentum, "eps": eps,
            "x": flat(x), "dy": flat(dy), "weight": flat(w) if affine else None,
            "bias": flat(b) if affine else None,
            "running_mean_in": flat(rm0) if running else None,
            "running_var_in": flat(rv0) if running else None}
    for k, v in ours.items():
        case[k] = v
        case["exact_" + k] = exact[k]
    for k, v in case.items():
        if isinstance(v, list) and v and isinstance(v[0], float):
            case[k] = [enc(e) for e in v]
    return case


def main():
    cases = [make_case(i) for i in range(CASES)]
    doc = {"generator": "scripts/golden/gen_pathological.py", "torch": torch.__version__,
           "seed": SEED, "cases": cases}
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
    os.replace(tmp, OUT)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
