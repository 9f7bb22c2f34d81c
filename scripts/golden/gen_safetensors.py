#!/usr/bin/python3
"""Writes tests/data/pytorch_bn_mlp.safetensors with PyTorch, for bnorm's checkpoint test.

Run with Debian's python3-torch: /usr/bin/python3 scripts/golden/gen_safetensors.py
The safetensors format is written by hand here (8-byte little-endian header size, JSON header,
raw little-endian data) because Debian 12 has no python3-safetensors; the keys are exactly
PyTorch's state_dict keys.
"""
import json
import os
import struct

import torch

net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.BatchNorm1d(3),
                          torch.nn.ReLU(), torch.nn.Linear(3, 2))
with torch.no_grad():
    for p in net.parameters():
        p.copy_(0.1 * torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape))
net.train()
net(torch.ones(5, 4))  # one step: running_var = 0.9·1 + 0.1·0 = 0.9, num_batches_tracked = 1
state = net.state_dict()
header, blobs, offset = {}, [], 0
for name, t in state.items():
    t = t.contiguous()
    dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
    raw = t.numpy().tobytes()
    header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
h = json.dumps(header).encode()
h += b" " * ((8 - (8 + len(h)) % 8) % 8)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                   "pytorch_bn_mlp.safetensors")
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
print("wrote", os.path.relpath(out), list(state.keys()))
