"""A tiny end-to-end design-space study that runs on a CPU: sample models from spaces, train each briefly on a
synthetic classification task, record (space, flops, params, error), and compare the spaces' error EDFs.

The data is synthetic and seeded (nothing to download): each class is a fixed random low-frequency pattern, and
every image is its class pattern under a random shift and brightness, plus noise. It is a smoke test of the
pipeline and a demonstration, not a substitute for ImageNet: its errors say little about real accuracy.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .sampling import sample_space

__all__ = ["synthetic_dataset", "train_and_evaluate", "reference_run"]


def synthetic_dataset(n: int, num_classes: int = 10, resolution: int = 32, seed: int = 0):
    """(images (n, 3, r, r) float32, labels (n,)): class patterns, randomly shifted and scaled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, 3, 4, 4, generator=torch.Generator().manual_seed(12345))
    patterns = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    shifts = torch.randint(-resolution // 8, resolution // 8 + 1, (n, 2), generator=g)
    x = torch.stack([torch.roll(patterns[c], (int(s[0]), int(s[1])), dims=(1, 2)) for c, s in zip(labels, shifts)])
    x = x * (0.5 + torch.rand(n, 1, 1, 1, generator=g)) + 0.8 * torch.randn(x.shape, generator=g)
    return x, labels


def train_and_evaluate(model: torch.nn.Module, train, test, steps: int = 30, batch: int = 32, lr: float = 0.05,
                       seed: int = 0) -> float:
    """Train with SGD (momentum 0.9, cosine schedule) for `steps` batches; return test error in %."""
    torch.manual_seed(seed)
    x, y = train
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in test[0].split(256)])
    return float((pred != test[1]).float().mean() * 100)


def reference_run(spaces=("anynetx_a", "regnetx"), n: int = 4, flops=(20e6, 80e6), steps: int = 30,
                  resolution: int = 32, num_classes: int = 10, seed: int = 0, log=None) -> dict:
    """Sample `n` models per space (flops range at 224x224, as the paper quotes complexity), train and test each
    on the synthetic task at `resolution`, and return {"settings", "records"} for `fastregnet edf`."""
    train = synthetic_dataset(2048, num_classes, resolution, seed)
    test = synthetic_dataset(512, num_classes, resolution, seed + 1)
    records = []
    for space in spaces:
        for i, s in enumerate(sample_space(space, n, seed=seed, flops=flops)):
            t0 = time.perf_counter()
            torch.manual_seed(seed + i)
            err = train_and_evaluate(s.build(num_classes), train, test, steps=steps, seed=seed + i)
            records.append(s.to_dict() | {"error": err, "train_seconds": round(time.perf_counter() - t0, 2)})
            if log:
                log(f"[explore] {space} {i + 1}/{n}: {s.flops / 1e6:.0f}MF, error {err:.1f}%")
    return {"settings": {"spaces": list(spaces), "n": n, "flops_range_at_224": list(flops), "steps": steps,
                         "resolution": resolution, "num_classes": num_classes, "seed": seed,
                         "data": "synthetic (fastregnet.explore.synthetic_dataset)"},
            "records": records}
