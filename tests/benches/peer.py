"""The PyTorch side of `cargo xtask bench peer`: the shapes classifier of nc7's example, trained
on the same images (PNG files nc7 wrote, preloaded), with the same optimizer, schedule, batch
and epochs, as a plain PyTorch loop (`torch`) or a Lightning `Trainer` without logger,
checkpointing or progress bar (`lightning`).

Prints one JSON line: the seconds of each training epoch (evaluation excluded), the evaluation
accuracy after the last epoch, and the peak resident memory.
"""

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def load(folder: Path):
    """The images (N, 3, H, W) in [0, 1] and labels of a `write-shapes` folder, by name."""
    names = sorted(p.stem for p in (folder / "images").glob("*.png"))
    images = np.stack(
        [np.asarray(Image.open(folder / "images" / f"{n}.png").convert("RGB")) for n in names]
    )
    labels = [json.loads((folder / "labels" / f"{n}.json").read_text())["label"] for n in names]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


class ShapesCnn(nn.Module):
    """Three 3×3 conv + ReLU + 2×2 max-pool blocks (8, 16, 16 channels), the mean over the
    image, a linear head: nc7's `ShapesCnn`."""

    def __init__(self, filters=(8, 16, 16), classes=3):
        super().__init__()
        layers, channels = [], 3
        for f in filters:
            layers += [nn.Conv2d(channels, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = f
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def learning_rate(step, lr=0.005, warmup=50, start=0.1, cosine=450, floor=1e-4):
    """nc7's schedule: a linear warm-up from `start`×lr over `warmup` steps, then cosine
    annealing to `floor` over `cosine` steps."""
    if step < warmup:
        return lr * (start + (1.0 - start) * step / warmup)
    t = min(step - warmup, cosine)
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * t / cosine))


def batches(n, batch, epoch, seed):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [order[i : i + batch] for i in range(0, n, batch)]


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        right = sum(
            (model(x[i : i + 100]).argmax(1) == y[i : i + 100]).sum().item()
            for i in range(0, len(x), 100)
        )
    model.train()
    return right / len(x)


def plain(args, train, evaluation):
    x, y = train
    model = ShapesCnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate(0))
    loss_fn = nn.CrossEntropyLoss()
    seconds, step = [], 0
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for idx in batches(len(x), args.batch, epoch, args.seed):
            for g in optimizer.param_groups:
                g["lr"] = learning_rate(step)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            step += 1
        seconds.append(time.perf_counter() - started)
    return seconds, accuracy(model, *evaluation)


def with_lightning(args, train, evaluation):
    import lightning as L

    x, y = train

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = ShapesCnn()
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            images, labels = batch
            return self.loss_fn(self.model(images), labels)

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=0.005)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: learning_rate(step) / 0.005
            )
            return [optimizer], [{"scheduler": schedule, "interval": "step"}]

    class Timer(L.Callback):
        def __init__(self):
            self.seconds, self.started = [], 0.0

        def on_train_epoch_start(self, *_):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, *_):
            self.seconds.append(time.perf_counter() - self.started)

    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=args.batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    timer = Timer()
    module = Module()
    L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    ).fit(module, data)
    return timer.seconds, accuracy(module.model, *evaluation)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["torch", "lightning"])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, evaluation = load(args.train), load(args.eval)
    run = plain if args.mode == "torch" else with_lightning
    seconds, acc = run(args, train, evaluation)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "accuracy": acc, "peak_rss": peak}))


if __name__ == "__main__":
    main()
