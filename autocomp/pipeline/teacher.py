"""The teacher: built, then loaded from a checkpoint or torchvision weights, or trained once and cached."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocomp._cache import cache_dir
from autocomp._device import amp_dtype, autocast, back_to_cpu, batch_to, to_device
from autocomp.data import Data
from autocomp.models.zoo import build_model, check_fits, load_checkpoint


def train_teacher(model: nn.Module, data: Data, epochs: int, seed: int, device: str = "cpu",
                  lr: float = 1e-3, batch_size: int = 64, progress: Callable | None = None) -> None:
    """Adam + cosine over ``epochs`` of the training split (augmented as the data say), mixed
    precision on a GPU."""
    torch.manual_seed(seed)
    to_device(model, device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    per_epoch = -(-data.n_train // batch_size)
    task = progress("training the teacher", epochs * per_epoch) if progress else None

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(device):
            loss = F.cross_entropy(model(batch_to(x, device)).float(), y.to(device))
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if task:
            task.update(1)

    if data.train.in_memory:  # every sample once per epoch, in a seeded order
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(data.n_train, generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                step(data.train.x[idx], data.train.y[idx])
            sched.step()
    else:
        batches = data.train_batches(batch_size, seed, pin=device.startswith("cuda"))
        try:
            for _ in range(epochs):
                for _ in range(per_epoch):
                    x, y, _ = next(batches)
                    step(x, y)
                sched.step()
        finally:
            batches.close()
    if task:
        task.close()
    back_to_cpu(model, device)


def prepare_teacher(spec: str, data: Data, checkpoint: str | None, epochs: int, seed: int,
                    cache_key: dict, device: str = "cpu", log: Callable[[str], None] = print,
                    model_kwargs: dict[str, Any] | None = None, weights: str | None = None,
                    progress: Callable | None = None) -> nn.Module:
    """Build the teacher; load its checkpoint or torchvision weights, or train it once and cache it."""
    model = build_model(spec, data.num_classes, data.input_shape, model_kwargs, weights)
    check_fits(model, data)
    if weights is not None:
        return model.eval()
    if checkpoint:
        load_checkpoint(model, checkpoint)
        return model.eval()
    identity = json.dumps({**cache_key, "epochs": epochs, "seed": seed}, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = cache_dir() / "teachers" / f"{spec.replace(':', '_').replace('/', '_')}-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    log(f"training the teacher ({spec}, {epochs} epochs); cached at {path}")
    train_teacher(model, data, epochs, seed, device, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()
