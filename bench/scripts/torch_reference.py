#!/usr/bin/env python3
"""PyTorch reference for the side-by-side benchmarks.

Trains the same `cnn` as adasync (conv5x5-32, ReLU, pool2, conv5x5-64, ReLU,
pool2, fc-1024, ReLU, fc-10, "same" padding) on Fashion-MNIST with the same
data normalisation, batch size and optimizer (SGD, momentum), and prints one
JSON object: samples/s over the timed steps and the test accuracy.

  --device cpu|cuda   where to train; data is resident on that device
  --threads N         CPU threads (torch.set_num_threads)
  --steps N           timed training steps (after --warmup steps)
  --epochs E          or: train E epochs (timed as a whole) and report accuracy
  --compile MODE      torch.compile the model (default, reduce-overhead,
                      max-autotune, max-autotune-no-cudagraphs); the warm-up
                      steps absorb the compilation, reported as compile_s
  --optimizer sgd|adam
  --model cnn|resnet20
                      resnet20: He et al.'s CIFAR ResNet (option A, batch
                      norm) on Fashion-MNIST padded to 32x32, as adasync's
                      --model resnet20 --dataset fashion-mnist32
  --target-accuracy A time to accuracy: train until the full test set reaches
                      A (checked every --eval-every steps, evaluation time
                      included) or --epochs run out; prints target_s
On --device cuda without a usable GPU it prints {"skipped": reason} and exits 0.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(dir_, pad=0):
    def f(name):
        p = os.path.join(dir_, name)
        return p + ".gz" if os.path.exists(p + ".gz") else p
    xtr = read_idx(f("train-images-idx3-ubyte")).astype(np.float32) / 255.0
    ytr = read_idx(f("train-labels-idx1-ubyte")).astype(np.int64)
    xte = read_idx(f("t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    yte = read_idx(f("t10k-labels-idx1-ubyte")).astype(np.int64)
    if pad:  # black borders before the statistics, as adasync's fashion-mnist32
        xtr = np.pad(xtr, ((0, 0), (pad, pad), (pad, pad)))
        xte = np.pad(xte, ((0, 0), (pad, pad), (pad, pad)))
    mean, std = xtr.mean(dtype=np.float64), xtr.std(dtype=np.float64)
    xtr = ((xtr - mean) / std).astype(np.float32)[:, None]
    xte = ((xte - mean) / std).astype(np.float32)[:, None]
    return xtr, ytr, xte, yte


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 5, padding=2)
        self.c2 = nn.Conv2d(32, 64, 5, padding=2)
        self.f1 = nn.Linear(64 * 7 * 7, 1024)
        self.f2 = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.f1(x.flatten(1)))
        return self.f2(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, (cout - cin) // 2

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        sc = x if self.pad == 0 and self.stride == 1 else F.pad(x[:, :, ::self.stride, ::self.stride],
                                                                 (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + sc)


class ResNet20(nn.Module):
    def __init__(self, channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for i, w in enumerate((16, 32, 64)):
            for b in range(3):
                blocks.append(Block(cin, w, 2 if i > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn", choices=["cnn", "resnet20"])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--epochs", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-item", action="store_true",
                    help="do not read each step's loss (no per-step host sync): PyTorch's best case")
    ap.add_argument("--compile", default="", help="torch.compile mode ('' = eager)")
    ap.add_argument("--augment", action="store_true", help="4-pixel padded random crop and horizontal flip")
    ap.add_argument("--lr-milestones", default="", help="epochs at which lr is multiplied by 0.1 (e.g. 1,1.5)")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--target-accuracy", type=float, default=0)
    ap.add_argument("--eval-every", type=int, default=200, help="steps between test-set checks (--target-accuracy)")
    a = ap.parse_args()

    name = "pytorch " + torch.__version__ + (f" compile({a.compile})" if a.compile else "") + \
        (" (no per-step sync)" if a.no_item else "")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        why = "torch " + torch.__version__ + (" built without CUDA" if torch.version.cuda is None else " sees no usable GPU")
        print(json.dumps({"framework": name, "device": a.device, "skipped": why}))
        return 0
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    xtr, ytr, xte, yte = load(a.data_dir, pad=2 if a.model == "resnet20" else 0)
    xtr, ytr = torch.from_numpy(xtr).to(dev), torch.from_numpy(ytr).to(dev)
    xte, yte = torch.from_numpy(xte).to(dev), torch.from_numpy(yte).to(dev)
    model = (ResNet20() if a.model == "resnet20" else Cnn()).to(dev)
    fused = {"fused": True} if dev.type == "cuda" else {}  # one kernel for the whole update
    if a.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=a.lr, **fused)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, **fused)
    fwd = torch.compile(model, mode=None if a.compile == "default" else a.compile) if a.compile else model
    gen = torch.Generator(device="cpu").manual_seed(a.seed)
    n = xtr.shape[0]

    def batches():
        while True:
            perm = torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n - a.batch + 1, a.batch):
                yield perm[i:i + a.batch]

    it = batches()
    black = float(xtr.min())  # a black pixel, normalised
    milestones = [float(m) for m in a.lr_milestones.split(",") if m]
    done = [0]

    def augment(xb):
        h, w = xb.shape[2], xb.shape[3]
        padded = F.pad(xb, (4, 4, 4, 4), value=black)
        oy = torch.randint(0, 9, (xb.shape[0],), generator=gen)
        ox = torch.randint(0, 9, (xb.shape[0],), generator=gen)
        flip = torch.rand(xb.shape[0], generator=gen) < 0.5
        out = torch.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(xb.shape[0])])
        out[flip] = out[flip].flip(3)
        return out

    graphs = a.compile in ("reduce-overhead", "max-autotune")  # modes that replay CUDA graphs

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
        idx = next(it)
        epoch = done[0] * a.batch / n
        for g in opt.param_groups:
            g["lr"] = a.lr * 0.1 ** sum(epoch >= m for m in milestones)
        done[0] += 1
        xb = augment(xtr[idx]) if a.augment else xtr[idx]
        loss = F.cross_entropy(fwd(xb), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def accuracy():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, xte.shape[0], 1000):
                correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
        model.train()
        return correct / xte.shape[0]

    # Warm-up: cuDNN autotuning, and for --compile the compilation itself.
    t0 = time.perf_counter()
    for _ in range(a.warmup):
        step()
    sync()
    compile_s = time.perf_counter() - t0
    if a.target_accuracy > 0:
        return time_to_accuracy(a, name, step, sync, accuracy, n, compile_s)
    steps = a.steps if a.steps > 0 else int(a.epochs * n / a.batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
        if not a.no_item:
            loss.item()  # a training loop reads its loss every step
    sync()
    dt = time.perf_counter() - t0
    out = {"framework": name, "model": a.model, "device": a.device, "threads": a.threads, "batch": a.batch, "steps": steps,
           "seconds": dt, "samples_per_s": steps * a.batch / dt, "test_accuracy": accuracy()}
    if a.compile:
        out["compile_s"] = compile_s  # warm-up steps included
    print(json.dumps(out))


def time_to_accuracy(a, name, step, sync, accuracy, n, compile_s):
    """Steps until the full test set reaches the target. Eager warm-up steps
    count as training time; compiled ones (the compilation) are reported apart."""
    max_steps = int((a.epochs or 20) * n / a.batch)
    done, acc, hit = a.warmup, 0.0, -1.0
    t0 = time.perf_counter()
    while done < max_steps:
        for _ in range(min(a.eval_every, max_steps - done)):
            step()
        done = min(done + a.eval_every, max_steps)
        sync()
        t_params = time.perf_counter() - t0  # as adasync: the time of the parameters evaluated
        acc = accuracy()  # earlier evaluations' time is counted in later ones
        if acc >= a.target_accuracy:
            hit = t_params
            break
    sync()
    warm_s = compile_s if not a.compile else 0.0  # eager warm-up is training time too
    print(json.dumps({"framework": name, "device": a.device, "optimizer": a.optimizer, "lr": a.lr,
                      "batch": a.batch, "target": a.target_accuracy, "reached": hit >= 0,
                      "target_s": hit + warm_s if hit >= 0 else None, "compile_s": compile_s if a.compile else 0,
                      "steps": done, "epochs": done * a.batch / n, "test_accuracy": acc}))


if __name__ == "__main__":
    sys.exit(main())
