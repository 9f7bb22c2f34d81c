#!/usr/bin/python3
"""PyTorch's training speed on the same networks as `bnorm train`, for scripts/bench-training.sh.

Usage: train_speed_torch.py --model mlp|cnn --steps N --threads T [--data DIR]
Prints one line: "torch <model> steps/s <rate>". Same model, batch 60, SGD, same threads; the
data are the real Fashion-MNIST images, shuffled per epoch, so the per-step work matches bnorm's
(batch gathering included). Timing excludes the first 20 warm-up steps.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch


def load(dir_):
    with gzip.open(os.path.join(dir_, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255
    with gzip.open(os.path.join(dir_, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def model(name):
    nn = torch.nn
    if name == "mlp":
        layers, width = [], 784
        for _ in range(3):
            layers += [nn.Linear(width, 100, bias=False), nn.BatchNorm1d(100), nn.Sigmoid()]
            width = 100
        return nn.Sequential(*layers, nn.Linear(100, 10)), False
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, 10)), True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x, y = load(a.data)
    net, images = model(a.model)
    opt = torch.optim.SGD(net.parameters(), lr=0.5 if a.model == "mlp" else 0.05,
                          momentum=0 if a.model == "mlp" else 0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, per_epoch = 60, x.shape[0] // 60
    order = torch.randperm(x.shape[0])
    t0 = None
    for step in range(a.steps + 20):
        if step == 20:
            t0 = time.perf_counter()
        i = step % per_epoch
        if i == 0:
            order = torch.randperm(x.shape[0])
        idx = order[i * batch:(i + 1) * batch]
        xb = x[idx]
        if images:
            xb = xb.reshape(-1, 1, 28, 28)
        opt.zero_grad()
        loss = loss_fn(net(xb), y[idx])
        loss.backward()
        opt.step()
    rate = a.steps / (time.perf_counter() - t0)
    print(f"torch {a.model} steps/s {rate:.1f}")


if __name__ == "__main__":
    main()
