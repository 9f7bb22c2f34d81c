#!/usr/bin/python3
"""Generates tests/data/batch_norm_golden.json: PyTorch's batch-norm values for bnorm's tests.

Run with Debian's python3-torch (1.13):  /usr/bin/python3 scripts/golden/gen_batch_norm.py
The output is committed; the tests never need torch. Every float32 case also carries the same
computation in float64 on the same (float32-valued) inputs ("*64" fields), so the tests can check
that bnorm's float32 is at least as close to float64 as PyTorch's own float32 is.

Cases:
  functional/*: torch.native_batch_norm (train and eval) + aten.native_batch_norm_backward,
                with save_mean/save_invstd.
  module/*:     nn.BatchNorm1d/2d/3d over several steps (train, train, eval, train, ...), with
                momentum None, affine off, track_running_stats off; y, dx, dweight, dbias and the
                buffers after every step.
"""
import json
import os
import sys

import torch

from tensor_lists import flat, fmt_layout

torch.manual_seed(20261124)
torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                   "batch_norm_golden.json")


def make_input(shape, dtype, kind):
    x = torch.randn(shape, dtype=torch.float64)
    if kind == "offset":  # mean/std = 1e3: cancellation-prone
        x = x * 0.5 + 1e3
    elif kind == "constant_channel":  # channel 0 constant 1e7
        x[:, 0] = 1e7
    elif kind == "scaled":
        x = x * torch.linspace(0.1, 10, shape[1]).reshape([1, shape[1]] + [1] * (len(shape) - 2))
    return x.to(dtype)


def functional_case(name, shape, dtype, channels_last, kind="randn", affine=True, running=True,
                    momentum=0.1, eps=1e-5):
    c = shape[1]
    x = make_input(shape, dtype, kind)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    w = (torch.rand(c, dtype=torch.float64) + 0.5).to(dtype) if affine else None
    b = torch.randn(c, dtype=torch.float64).to(dtype) if affine else None
    rm0 = torch.randn(c, dtype=torch.float64).to(dtype) if running else None
    rv0 = (torch.rand(c, dtype=torch.float64) + 0.5).to(dtype) if running else None
    case = {"name": name, "kind": "functional", "shape": list(shape), "dtype": str(dtype)[6:],
            "channels_last": channels_last, "momentum": momentum, "eps": eps,
            "x": flat(x), "dy": flat(dy),
            "weight": flat(w) if affine else None, "bias": flat(b) if affine else None,
            "running_mean_in": flat(rm0) if running else None,
            "running_var_in": flat(rv0) if running else None}

    def run(dt, suffix):
        xx = fmt_layout(x.to(dt), channels_last)
        dyy = fmt_layout(dy.to(dt), channels_last)
        ww = w.to(dt) if affine else None
        bb = b.to(dt) if affine else None
        rm = rm0.to(dt).clone() if running else None
        rv = rv0.to(dt).clone() if running else None
        y, sm, si = torch.native_batch_norm(xx, ww, bb, rm, rv, True, momentum, eps)
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            dyy, xx, ww, rm, rv, sm, si, True, eps, [True, affine, affine])
        out = {"y": flat(y), "save_mean": flat(sm), "save_invstd": flat(si), "dx": flat(dx)}
        if affine:
            out["dweight"] = flat(dw)
            out["dbias"] = flat(db)
        if running:
            out["running_mean"] = flat(rm)
            out["running_var"] = flat(rv)
            # Eval mode with the updated running statistics.
            ye, _, _ = torch.native_batch_norm(xx, ww, bb, rm, rv, False, momentum, eps)
            dxe, dwe, dbe = torch.ops.aten.native_batch_norm_backward(
                dyy, xx, ww, rm, rv, None, None, False, eps, [True, affine, affine])
            out["y_eval"] = flat(ye)
            out["dx_eval"] = flat(dxe)
            if affine:
                out["dweight_eval"] = flat(dwe)
                out["dbias_eval"] = flat(dbe)
        for k, v in out.items():
            case[k + suffix] = v

    run(dtype, "")
    if dtype == torch.float32:
        run(torch.float64, "64")
    return case


def module_case(name, cls, shape, dtype, channels_last, momentum=0.1, affine=True, track=True,
                eps=1e-5, modes=("train", "train", "eval", "train", "eval")):
    c = shape[1]
    bn = cls(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track).to(dtype)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.rand(c) + 0.5)
            bn.bias.copy_(torch.randn(c))
    case = {"name": name, "kind": "module", "module": cls.__name__, "shape": list(shape),
            "dtype": str(dtype)[6:], "channels_last": channels_last, "momentum": momentum,
            "eps": eps, "affine": affine, "track_running_stats": track,
            "weight": flat(bn.weight) if affine else None, "bias": flat(bn.bias) if affine else None,
            "steps": []}
    for i, mode in enumerate(modes):
        bn.train(mode == "train")
        x = fmt_layout(make_input(shape, dtype, "randn") * (1 + i) + i, channels_last)
        x.requires_grad_(True)
        dy = fmt_layout(torch.randn(shape, dtype=dtype), channels_last)
        bn.zero_grad()
        y = bn(x)
        y.backward(dy)
        step = {"mode": mode, "x": flat(x), "dy": flat(dy), "y": flat(y), "dx": flat(x.grad)}
        if affine:
            step["dweight"] = flat(bn.weight.grad)
            step["dbias"] = flat(bn.bias.grad)
        if track:
            step["running_mean"] = flat(bn.running_mean)
            step["running_var"] = flat(bn.running_var)
            step["num_batches_tracked"] = int(bn.num_batches_tracked)
        case["steps"].append(step)
    return case


def main():
    f32, f64 = torch.float32, torch.float64
    cases = []
    for dtype in (f32, f64):
        dn = "f32" if dtype == f32 else "f64"
        cases += [
            functional_case(f"functional/2d_{dn}", (8, 5), dtype, False),
            functional_case(f"functional/3d_{dn}", (4, 3, 7), dtype, False),
            functional_case(f"functional/4d_{dn}", (3, 4, 5, 6), dtype, False),
            functional_case(f"functional/4d_cl_{dn}", (3, 4, 5, 6), dtype, True),
            functional_case(f"functional/5d_{dn}", (2, 3, 2, 3, 4), dtype, False),
            functional_case(f"functional/5d_cl_{dn}", (2, 3, 2, 3, 4), dtype, True),
            functional_case(f"functional/noaffine_{dn}", (6, 4, 9), dtype, False, affine=False),
            functional_case(f"functional/norunning_{dn}", (5, 3, 4, 4), dtype, False,
                            running=False),
            functional_case(f"functional/momentum0.7_eps1e-3_{dn}", (7, 6), dtype, False,
                            momentum=0.7, eps=1e-3),
            functional_case(f"functional/offset1e3_{dn}", (4, 3, 8, 8), dtype, False,
                            kind="offset"),
            functional_case(f"functional/offset1e3_cl_{dn}", (4, 3, 8, 8), dtype, True,
                            kind="offset"),
            functional_case(f"functional/constant1e7_{dn}", (4, 3, 5, 5), dtype, False,
                            kind="constant_channel"),
            functional_case(f"functional/scaled_{dn}", (16, 9, 3), dtype, False, kind="scaled"),
            functional_case(f"functional/n1_{dn}", (1, 4, 3, 3), dtype, False),
            functional_case(f"functional/hw1_{dn}", (6, 5, 1, 1), dtype, False),
            functional_case(f"functional/c1_{dn}", (5, 1, 4, 3), dtype, True),
            functional_case(f"functional/odd_{dn}", (3, 17, 13, 11), dtype, True),
        ]
    nn = torch.nn
    cases += [
        module_case("module/bn1d_2d", nn.BatchNorm1d, (10, 4), f32, False),
        module_case("module/bn1d_3d", nn.BatchNorm1d, (4, 3, 6), f32, False),
        module_case("module/bn2d", nn.BatchNorm2d, (3, 4, 5, 5), f32, False),
        module_case("module/bn2d_cl", nn.BatchNorm2d, (3, 4, 5, 5), f32, True),
        module_case("module/bn3d", nn.BatchNorm3d, (2, 3, 3, 2, 4), f32, False),
        module_case("module/bn3d_cl", nn.BatchNorm3d, (2, 3, 3, 2, 4), f32, True),
        module_case("module/bn2d_momentum_none", nn.BatchNorm2d, (3, 4, 4, 4), f32, False,
                    momentum=None),
        module_case("module/bn2d_noaffine", nn.BatchNorm2d, (3, 4, 4, 4), f32, False,
                    affine=False),
        module_case("module/bn2d_notrack", nn.BatchNorm2d, (3, 4, 4, 4), f32, False,
                    track=False),
        module_case("module/bn1d_f64", nn.BatchNorm1d, (12, 7), f64, False),
        module_case("module/bn2d_eps0.1_m0.3", nn.BatchNorm2d, (2, 3, 4, 5), f32, False,
                    momentum=0.3, eps=0.1),
    ]
    doc = {"generator": "scripts/golden/gen_batch_norm.py", "torch": torch.__version__,
           "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, OUT)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
