#!/usr/bin/python3
"""Loads a `bnorm train` checkpoint of the 3×100 MLP into PyTorch (strict state-dict load) and
evaluates it on the Fashion-MNIST test set, to show weights move from bnorm to PyTorch.

Usage: /usr/bin/python3 scripts/golden/check_checkpoint_in_torch.py out/train/model.safetensors
Needs Debian's python3-torch (scripts/setup-debian.sh --golden). Debian 12 has no
python3-safetensors, so the file is parsed by hand (8-byte header size, JSON header, raw data).
"""
import gzip
import json
import struct
import sys

import numpy as np
import torch

path = sys.argv[1]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
state = {}
for key, v in header.items():
    if key == "__metadata__":
        continue
    dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64}[v["dtype"]]
    b, e = v["data_offsets"]
    state[key] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt).reshape(v["shape"]).copy())
meta = header.get("__metadata__", {})
bn = meta.get("bnorm.batch_norm", "1") == "1"
layers, width = [], 784
for _ in range(3):
    layers += [torch.nn.Linear(width, 100, bias=not bn)]
    if bn:
        layers += [torch.nn.BatchNorm1d(100)]
    layers += [torch.nn.Sigmoid()]
    width = 100
net = torch.nn.Sequential(*layers, torch.nn.Linear(100, 10))
print(net.load_state_dict(state, strict=True))
d = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
x = x.reshape(-1, 784).astype(np.float32) / 255
y = np.frombuffer(gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
net.eval()
with torch.no_grad():
    acc = (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
print(f"PyTorch test accuracy {acc:.4f}; bnorm reported {meta.get('bnorm.test_acc', '?')}")
