"""THE training loop. Every technique is a switch read here, never a second loop.

Read it top to bottom: setup (devices, data, model, optimizer, schedule, EMA, resume), then one loop over epochs and
micro-batches in which accumulation, autocast, no_sync, clipping, the scaler, the schedule, EMA, logging,
checkpointing and the stop conditions are each a line or two. The model is a black box: the loop calls its forward,
``set_grad_checkpointing``, and (through optim.py) ``no_weight_decay`` / ``layer_id``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..utils.allocator import retain_freed_memory
from ..utils.fileio import atomic_path, atomic_write_text
from .autobatch import find_micro_batch
from .checkpoint import capture_rng, keep_history, load_train_state, resolve_resume, restore_rng, save_train_state
from .config import Config
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    device_for,
    load_model_and_optimizer,
    model_state_dict,
    no_sync,
    optimizer_state_dict,
    setup_distributed,
    wrap_model,
)
from .evaluate import autocast, evaluate, resolve_precision
from .monitor import Monitor, block_grad_norms, peak_memory_mb
from .optim import build_optimizer, build_scheduler


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and where the debug state was saved."""


def build_model(cfg: Config, num_classes: int, in_chans: int, img_size: tuple[int, int]) -> nn.Module:
    from .. import create_model

    overrides: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "img_size": img_size}
    if cfg.model.token_keep_rate < 1.0:
        overrides["token_keep_rate"] = cfg.model.token_keep_rate
    for key in ("drop_path_rate", "drop_rate"):
        if getattr(cfg.model, key) is not None:
            overrides[key] = getattr(cfg.model, key)
    if cfg.data.size_schedule:  # batches of other sizes: the position embedding is resampled per call
        overrides["dynamic_img_size"] = True
    return create_model(cfg.model.name, pretrained=cfg.model.pretrained, **overrides, **cfg.model.kwargs)


def _datasets(cfg: Config):
    from ..data import build_dataset

    common = dict(val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, cache_dir=cfg.data.cache_dir,
                  num_workers=cfg.data.num_workers)
    kind = {"root": cfg.data.root, **cfg.data.kwargs} if cfg.data.root else dict(cfg.data.kwargs)
    return tuple(build_dataset(cfg.data.name, split, **common, **kind) for split in ("train", "val", "test"))


def _new_run_dir(cfg: Config, info: DistInfo) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.checkpoint.out_dir) / f"{cfg.checkpoint.run_name or cfg.model.name}-{stamp}"
    path = base
    if info.is_main:
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(2, 10_000):  # two runs started in the same second must not share a directory
            try:
                path.mkdir()
                break
            except FileExistsError:
                path = base.with_name(f"{base.name}-{n}")
    return Path(broadcast_object(str(path), info))


def size_at(schedule: list[tuple[float, int]] | None, progress: float, default: tuple[int, int]) -> tuple[int, int]:
    """The training image size of a progressive-resolution schedule at ``progress`` (fraction of the run)."""
    size = default
    for start, side in schedule or ():
        if progress >= start:
            size = (side, side)
    return size


def batch_merge(cfg: Config, now: tuple[int, int], native: tuple[int, int]) -> int:
    """Loader batches per forward at image size ``now``: (native / now)^2 when data.size_schedule_batch='scale'
    (same pixels per step, so the device stays as busy as at full size), capped at 4; else 1."""
    if cfg.data.size_schedule_batch != "scale":
        return 1
    return max(1, min(4, round(native[0] * native[1] / (now[0] * now[1]))))


def _check_size_schedule(cfg: Config, model: nn.Module, native: tuple[int, int]) -> None:
    patch = getattr(model, "patch_size", None)
    patch = patch if isinstance(patch, int) else (patch or (1,))[0]
    bad = [side for _, side in cfg.data.size_schedule or () if side % patch]
    if bad:
        raise ValueError(f"data.size_schedule sizes {bad} are not multiples of the model's patch size {patch} "
                         f"(model {cfg.model.name} at {native[0]}x{native[1]})")


def _configure_runtime(cfg: Config) -> None:
    if cfg.train.retain_freed_memory:
        retain_freed_memory()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def train(cfg: Config, model: nn.Module | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says and return the summary (also saved as summary.json in the run directory).

    ``model``: a ready module to train instead of building ``cfg.model.name`` (it must accept the data's shapes).
    """
    cfg.validate()
    t_start = time.perf_counter()
    device_type = "cuda" if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    info = setup_distributed(cfg.dist, device_type)
    try:
        return _train(cfg, model, info, device_for(info, cfg.train.device), t_start)
    finally:
        cleanup(info)


def _train(cfg: Config, model: nn.Module | None, info: DistInfo, device: torch.device, t_start: float) -> dict:
    from ..data import BatchAugment, build_loader

    tc, precision = cfg.train, resolve_precision(cfg.train.precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision='fp16' needs CUDA; on a CPU use 'bf16'")
    if tc.ema and info.strategy == "fsdp":
        raise ValueError("train.ema is not supported with dist.strategy='fsdp' (the average would need the full "
                         "weights on every rank); turn one of them off")
    _configure_runtime(cfg)

    # --- data and model --------------------------------------------------------------------------------------------
    train_ds, val_ds, test_ds = _datasets(cfg)
    size = (cfg.data.img_size,) * 2 if cfg.data.img_size else tuple(train_ds.image_size)
    out_size = None if size == tuple(train_ds.image_size) else size
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    if model is None:
        model = build_model(cfg, train_ds.num_classes, train_ds.channels, size)
    mean, std = train_ds.mean, train_ds.std
    if cfg.model.pretrained and len(getattr(model, "data_config", {}).get("mean", ())) == train_ds.channels:
        mean, std = model.data_config["mean"], model.data_config["std"]  # keep the normalisation it learned with
    _check_size_schedule(cfg, model, size)
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    if tc.grad_checkpointing:
        model.set_grad_checkpointing(True)

    # --- batch geometry: global micro-batch x accumulation = effective batch ---------------------------------------
    if cfg.data.batch_size % info.world_size:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by the {info.world_size} processes")
    accum, per_rank = tc.accum_steps, cfg.data.batch_size // info.world_size
    if tc.auto_batch:
        micro = find_micro_batch(per_rank * accum, device, tc.cpu_batch_cap,
                                 lambda b: _try_batch(model, b, train_ds.channels, size, device, precision))
        accum, per_rank = per_rank * accum // micro, micro
    per_sample = cfg.data.pipeline == "per_sample"
    train_tf = eval_tf = None
    if per_sample:  # workers decode, crop, augment and normalise each image; batches arrive as floats
        from ..data.transforms import build_eval_transform, build_train_transform

        train_tf = build_train_transform(
            size, mean=mean, std=std, scale=(cfg.data.scale_min, 1.0), hflip=0.5 if cfg.data.flip else 0.0,
            random_crop_padding=cfg.data.crop_padding or None, auto_augment=cfg.data.auto_augment,
            magnitude=cfg.data.randaugment_magnitude, num_ops=cfg.data.randaugment_num_ops,
            random_erasing=cfg.data.random_erasing)
        eval_tf = build_eval_transform(size, mean=mean, std=std, crop_pct=cfg.data.crop_pct)
    train_loader = build_loader(train_ds, per_rank, train=True, seed=tc.seed, device=device, transform=train_tf,
                                num_workers=cfg.data.num_workers, rank=info.rank, world_size=info.world_size)
    eval_bs = max(1, (cfg.data.eval_batch_size or 2 * cfg.data.batch_size) // info.world_size)
    val_loader, test_loader = (build_loader(ds, eval_bs, train=False, device=device, num_workers=cfg.data.num_workers,
                                            transform=eval_tf, rank=info.rank, world_size=info.world_size)
                               for ds in (val_ds, test_ds))
    batches = len(train_loader)
    if batches == 0:
        raise ValueError(f"the training split has {len(train_ds)} images, fewer than one batch of {per_rank}")
    steps_per_epoch = math.ceil(batches / accum)
    total_steps = min(tc.epochs * steps_per_epoch, tc.max_steps or 10**18)

    mixing = cfg.data.mixup_alpha > 0 or cfg.data.cutmix_alpha > 0
    aug_gen = torch.Generator().manual_seed(tc.seed * 1009 + info.rank)
    # batch pipeline: crop/flip/normalise/resize + mixing here; per_sample: only the mixing (identity normalisation)
    augment = BatchAugment(
        train_ds.num_classes, (0.0,) * train_ds.channels if per_sample else mean,
        (1.0,) * train_ds.channels if per_sample else std, crop_padding=0 if per_sample else cfg.data.crop_padding,
        flip=cfg.data.flip and not per_sample, mixup_alpha=cfg.data.mixup_alpha, cutmix_alpha=cfg.data.cutmix_alpha,
        mix_prob=cfg.data.mix_prob, switch_prob=cfg.data.switch_prob,
        label_smoothing=tc.label_smoothing if mixing else 0.0, out_size=None if per_sample else out_size,
        generator=aug_gen,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if mixing else tc.label_smoothing)  # soft targets if mixing
    distiller = None
    if tc.distill:  # a frozen teacher joins the loss; a DeiT student then returns (class, distillation) logits
        from .distill import build_distiller

        distiller = build_distiller(tc.distill, train_ds.num_classes, criterion, precision, device, mean, std)
        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(True)

    # --- optimizer, schedule, scaler, EMA, wrappers ----------------------------------------------------------------
    raw_model = model  # parameter names and state dicts always come from the unwrapped module
    ema = AveragedModel(raw_model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) \
        if tc.ema else None
    model = wrap_model(model, info, device)
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, total_steps,
                                by_progress=bool(tc.time_budget_s) or cfg.data.size_schedule_batch == "scale")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if tc.compile:
        model = torch.compile(model)
    torch.manual_seed(tc.seed + info.rank)  # dropout / drop-path / token-dropout streams differ per rank

    # --- run directory and resume ----------------------------------------------------------------------------------
    step, epoch, best, bad_epochs, resumed, elapsed_before, images_seen = 0, 0, None, 0, None, 0.0, 0
    if cfg.checkpoint.resume:
        path = resolve_resume(cfg.checkpoint.resume, cfg.checkpoint.out_dir, cfg.checkpoint.run_name or cfg.model.name)
        resumed = load_train_state(path)
        run_dir = path.parent
        if resumed["geometry"] != [per_rank, accum, info.world_size]:
            raise ValueError(f"{path} was saved with (batch per process, accum_steps, processes) = "
                             f"{tuple(resumed['geometry'])}, this run has {(per_rank, accum, info.world_size)}")
        load_model_and_optimizer(model, raw_model, optimizer, resumed["model"], resumed["optimizer"], info)
        fresh_schedule = dict(scheduler.lr_lambdas[0].__dict__)
        scheduler.load_state_dict(resumed["scheduler"])
        for fn in scheduler.lr_lambdas:  # the schedule's shape follows this run's config (e.g. a raised max_steps)
            fn.__dict__.update(fresh_schedule)
        scaler.load_state_dict(resumed["scaler"])
        if ema is not None:
            ema.load_state_dict(resumed["ema"])
        step, epoch, best, bad_epochs = resumed["step"], resumed["epoch"], resumed["best"], resumed["bad_epochs"]
        elapsed_before, images_seen = resumed.get("elapsed_s", 0.0), resumed.get("images_seen", 0)
        restore_rng(resumed["rng"], aug_gen)
    else:
        run_dir = _new_run_dir(cfg, info)
    if info.is_main:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    monitor = Monitor(run_dir, cfg.log, enabled=info.is_main, resume_step=step if resumed is not None else None)
    monitor.print(f"run {run_dir}: {cfg.model.name}, {sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M "
                  f"params, {len(train_ds)} train images, batch {per_rank}x{info.world_size} procs x{accum} accum, "
                  f"{steps_per_epoch} steps/epoch, {total_steps} steps, {precision} on {device}")

    def training_state(epoch_to_run: int, loader_state: dict) -> dict:
        """Everything to continue bit for bit. Under FSDP2 a collective (the full state is gathered to rank 0)."""
        return {
            "model": model_state_dict(model, raw_model, info), "optimizer": optimizer_state_dict(model, optimizer, info),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else {},
            "step": step, "epoch": epoch_to_run, "loader": loader_state, "best": best, "bad_epochs": bad_epochs,
            "geometry": [per_rank, accum, info.world_size], "rng": capture_rng(aug_gen), "config": cfg.to_dict(),
            "elapsed_s": elapsed(), "images_seen": images_seen,
        }

    def save_last(epoch_to_run: int, loader_state: dict, name: str = "last.pt") -> None:
        state = training_state(epoch_to_run, loader_state) if info.is_main or info.strategy == "fsdp" else None
        if info.is_main:
            save_train_state(run_dir / name, state)

    def save_weights(module: nn.Module, name: str, extra: dict) -> None:
        """A vitkit .safetensors that rebuilds the model by itself (under FSDP2 the full weights, gathered)."""
        from .. import save_checkpoint
        from ..models.registry import build_from_config

        weights = model_state_dict(model, module, info) if info.strategy == "fsdp" else None
        if not info.is_main:
            return
        meta = {"class_names": list(train_ds.classes), "mean": list(mean), "std": list(std), "dataset": cfg.data.name,
                "img_size": list(size), **extra}
        if weights is not None:  # an unsharded twin on the meta device, filled with the gathered tensors
            with torch.device("meta"):
                twin = build_from_config(module.arch, module.config)
            twin.load_state_dict(weights, assign=True)
            twin.model_name, twin.data_config = cfg.model.name, getattr(module, "data_config", {})
            module = twin
        if hasattr(module, "config"):
            save_checkpoint(module, run_dir / name, metadata=meta)
        else:  # a user module (train(cfg, model=...)) that vitkit cannot rebuild: its weights alone
            from safetensors.torch import save_file

            with atomic_path(run_dir / name) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                          str(tmp), metadata={"extra": json.dumps(meta)})

    def run_eval(module: nn.Module, loader) -> dict:
        """Under DDP through the plain module: DDP's forward may broadcast buffers, a collective that would hang
        when the ranks' eval shards differ by a batch. FSDP2 needs its wrapper; evaluate() keeps ranks in step."""
        module = model if module is raw_model and info.strategy == "fsdp" else module
        return evaluate(module, loader, num_classes=train_ds.num_classes, mean=mean, std=std, device=device,
                        precision=precision, out_size=out_size, info=info, hflip_tta=cfg.data.eval_hflip_tta)

    # --- the loop --------------------------------------------------------------------------------------------------
    t_loop = time.perf_counter()

    def elapsed() -> float:
        """Training seconds so far (this process and any run it resumed): what train.time_budget_s counts."""
        return elapsed_before + time.perf_counter() - t_loop

    def progress() -> float:
        """The fraction of the run done: of the time budget when there is one, else of the data (batches merged by
        data.size_schedule_batch='scale' make steps uneven, so steps do not measure it)."""
        if tc.time_budget_s:
            return elapsed() / tc.time_budget_s
        if cfg.data.size_schedule_batch == "scale":
            return (epoch * batches + next_batch) / (tc.epochs * batches)
        return step / total_steps

    schedule_fn = scheduler.lr_lambdas[0]
    higher_better = cfg.checkpoint.metric == "val_acc1"
    stop_reason = None
    model.train()
    while epoch < tc.epochs and stop_reason is None:
        if resumed is not None and resumed["loader"]["batches_done"] and resumed["epoch"] == epoch:
            train_loader.load_state_dict(resumed["loader"])  # continue mid-epoch, data order intact
        else:
            train_loader.set_epoch(epoch)
        start_batch = train_loader.state_dict()["batches_done"]
        monitor.start_epoch(epoch, tc.epochs, steps_per_epoch, start_batch // accum)
        t_epoch = t_log = t_wait_start = time.perf_counter()
        wait = 0.0
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count since the last log
        epoch_sums = torch.zeros(3, dtype=torch.float64, device=device)
        step_loss = torch.zeros((), device=device)
        log_images = 0
        next_batch = start_batch
        batch_iter = iter(train_loader)
        batch_idx = start_batch - 1
        for images, labels in batch_iter:
            batch_idx += 1
            if cfg.data.size_schedule:  # progressive resolution: this batch's size from the run's progress
                now_size = size_at(cfg.data.size_schedule, progress(), size)
                augment.out_size = None if now_size == tuple(images.shape[-2:]) else now_size
                merge = batch_merge(cfg, now_size, size)
                if merge > 1:  # smaller images, bigger batch: the next loader batches join this one
                    more = list(itertools.islice(batch_iter, merge - 1))
                    images, labels = torch.cat([images, *(m[0] for m in more)]), torch.cat([labels, *(m[1] for m in more)])
                    batch_idx += len(more)
            wait += time.perf_counter() - t_wait_start
            next_batch = batch_idx + 1
            group_start = batch_idx - batch_idx % accum
            group_size = min(accum, batches - group_start)  # the epoch's last group may be short
            last_micro = batch_idx == group_start + group_size - 1
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x, y = augment(images, labels)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with no_sync(model, skip=not last_micro), autocast(device, precision):
                out = model(x)
                logits, loss = distiller(x, out, y) if distiller else (out, criterion(out.float(), y))
            scaler.scale(loss / group_size).backward()
            step_loss += loss.detach() / group_size
            hard = y if y.ndim == 1 else y.argmax(1)
            batch_stats = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == hard).sum().double(),
                                       torch.tensor(len(y), dtype=torch.float64, device=device)])
            sums += batch_stats
            epoch_sums += batch_stats
            log_images += len(y) * info.world_size
            images_seen += len(y) * info.world_size
            if not last_micro:
                t_wait_start = time.perf_counter()
                continue

            # one optimizer step
            if info.enabled:  # every rank must agree to stop, or the others would hang in the next all-reduce
                step_loss.fill_(all_reduce_sum([float(step_loss)], device, info)[0])
            if precision != "fp16" and not torch.isfinite(step_loss):  # fp16: the scaler skips such steps itself
                debug = run_dir / f"nonfinite-step{step + 1}.pt"
                save_last(epoch, train_loader.state_dict(), name=debug.name)
                raise NonFiniteLossError(
                    f"non-finite loss ({float(step_loss)}) at optimizer step {step + 1} (epoch {epoch + 1}, batch "
                    f"{batch_idx + 1}/{batches}); the state before this step is saved in {debug}")
            log_now = (step + 1) % cfg.log.every_steps == 0
            grad_norm = None
            if cfg.optim.clip_grad_norm or log_now:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm or math.inf)
            blocks = block_grad_norms(raw_model) if cfg.log.block_grad_every and \
                (step + 1) % cfg.log.block_grad_every == 0 else None
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if schedule_fn.by_progress:
                schedule_fn.progress = progress()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(raw_model)
            step += 1
            step_loss.zero_()

            if not log_now:
                monitor.step(1)
            else:
                now = time.perf_counter()
                record = {
                    "kind": "step", "step": step, "epoch": epoch + (batch_idx + 1) / batches,
                    "train_loss": float(sums[0] / sums[2]), "train_acc1": float(sums[1] / sums[2] * 100),
                    "lr": scheduler.get_last_lr()[-1], "grad_norm": float(grad_norm),
                    "img_per_s": log_images / (now - t_log), "data_wait": wait / (now - t_log),
                    "mem_mb": peak_memory_mb(device),
                }
                if blocks:
                    record["block_grad_norm"] = blocks
                monitor.step(1, {"loss": record["train_loss"], "acc": record["train_acc1"], "lr": record["lr"],
                                 "img/s": round(record["img_per_s"])})
                monitor.log(record, step, line=True)
                sums.zero_()
                t_log, wait, log_images = now, 0.0, 0
            if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0 and batch_idx + 1 < batches:
                save_last(epoch, train_loader.state_dict())
            if tc.crash_after_steps and step >= tc.crash_after_steps:
                monitor.close()
                os._exit(3)  # testing aid: die like a killed process, nothing flushed or cleaned
            if step >= total_steps:
                stop_reason = f"reached train.max_steps={total_steps}" if total_steps < tc.epochs * steps_per_epoch \
                    else "finished"
                break
            if tc.time_budget_s and _agree(elapsed() >= tc.time_budget_s, device, info):
                stop_reason = f"reached train.time_budget_s={tc.time_budget_s:g}"
                break
            t_wait_start = time.perf_counter()
        monitor.end_epoch()
        epoch_done = next_batch >= batches

        # --- end of epoch: validate, keep the best, early stopping, last.pt --------------------------------------
        loss_sum, correct, count = all_reduce_sum(epoch_sums.tolist(), device, info)
        record = {"kind": "epoch", "step": step, "epoch": epoch + (next_batch / batches if not epoch_done else 1),
                  "epoch_time_s": time.perf_counter() - t_epoch,
                  "train_loss": loss_sum / max(count, 1), "train_acc1": correct / max(count, 1) * 100}
        if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs or stop_reason:
            val = run_eval(raw_model, val_loader)
            record.update(val_loss=val["loss"], val_acc1=val["acc1"], val_acc5=val["acc5"])
            if ema is not None:
                ema_val = run_eval(ema.module, val_loader)
                record.update(val_ema_loss=ema_val["loss"], val_ema_acc1=ema_val["acc1"])
                save_weights(ema.module, "ema.safetensors", {"epoch": epoch + 1, "step": step, "val_acc1": ema_val["acc1"]})
            value = record[cfg.checkpoint.metric]
            sign = 1 if higher_better else -1
            if best is None or sign * (value - best) > tc.early_stop_min_delta:
                best, bad_epochs = value, 0
                save_weights(raw_model, "best.safetensors", {"epoch": epoch + 1, "step": step,
                                                             cfg.checkpoint.metric: value})
            else:
                bad_epochs += 1
            if tc.early_stop_patience and bad_epochs >= tc.early_stop_patience:
                stop_reason = f"early stop: {cfg.checkpoint.metric} did not improve for {bad_epochs} evaluations"
        record["elapsed_s"] = elapsed()  # after validation: the time this accuracy was reached
        monitor.log(record, step, line=True)
        if monitor.mode == "bar":
            monitor.print("  ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))
        epoch += 1 if epoch_done else 0
        save_last(epoch, train_loader.state_dict())  # after a full epoch the loader already points at the next
        if info.is_main and epoch_done:
            keep_history(run_dir, epoch, cfg.checkpoint.keep_last)
        resumed = None

    # --- the end: test the best weights, write the summary ---------------------------------------------------------
    train_time = elapsed()  # the loop's wall clock, validations included: what a time budget is compared with
    barrier(info)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "model": cfg.model.name, "data": cfg.data.name,
                               "steps": step, "epochs": epoch, "micro_batch": per_rank * info.world_size,
                               "accum_steps": accum, "processes": info.world_size, "rank": info.rank,
                               "precision": precision, "stop_reason": stop_reason or "finished"}
    best_path = run_dir / "best.safetensors"
    summary["test_weights"] = "final" if info.strategy == "fsdp" or not best_path.is_file() else "best"
    if summary["test_weights"] == "best":
        from ..weights import read_state_dict

        raw_model.load_state_dict(read_state_dict(best_path))
    test = run_eval(raw_model, test_loader)
    wall = time.perf_counter() - t_start
    summary.update({
        f"best_{cfg.checkpoint.metric}": best, "test_acc1": test["acc1"], "test_acc5": test["acc5"],
        "test_loss": test["loss"], "test_images": test["count"], "wall_time_s": wall, "train_time_s": train_time,
        "train_images": images_seen,
        "train_img_per_s": _mean_throughput(monitor.history), "peak_mem_mb": peak_memory_mb(device),
        "best_checkpoint": str(best_path), "last_state": str(run_dir / "last.pt"),
    })
    if ema is not None:
        summary["test_ema_acc1"] = run_eval(ema.module, test_loader)["acc1"]
    monitor.print("summary: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in summary.items()))
    monitor.finish(summary)
    if info.is_main and cfg.log.report:  # report.html from the run directory and the best weights (vitkit.viz)
        from ..viz.report import write_run_report

        write_run_report(run_dir, val_ds, device=device)
    return summary


def _agree(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank when any rank says so: clocks differ, and a rank that stopped alone would hang the rest."""
    return bool(all_reduce_sum([float(flag)], device, info)[0]) if info.enabled else flag


def _mean_throughput(history: list[dict]) -> float | None:
    values = [r["img_per_s"] for r in history if r.get("kind") == "step" and "img_per_s" in r]
    return sum(values) / len(values) if values else None


def _try_batch(model: nn.Module, batch: int, chans: int, size, device: torch.device, precision: str) -> None:
    x = torch.zeros(batch, chans, *size, device=device)
    try:
        with autocast(device, precision):
            model(x).float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)


__all__ = ["train", "build_model", "NonFiniteLossError"]
