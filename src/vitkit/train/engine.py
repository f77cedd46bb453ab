"""THE training loop. Every technique is a switch read here, never a second loop.

Read it top to bottom, as the steps of a run:

1. ``Trainer.__init__`` -- setup: devices, data, model, optimizer, schedule, scaler, EMA, run directory, resume.
2. ``run`` -- epochs until a stop condition; each epoch is ``train_epoch`` then ``end_epoch``.
3. ``train_epoch`` -- micro-batches (``micro_step``: forward, loss, backward) and, every ``accum_steps`` of them,
   ``optimizer_step`` (clip, step, schedule, EMA, log, checkpoint, stop conditions).
4. ``end_epoch`` -- validate, keep the best weights, early stopping, ``last.pt``.
5. ``finish`` -- test the best weights and write the summary.

Everything the loop carries from one step to the next is in ``self.state`` (:class:`~vitkit.train.state.LoopState`),
which is exactly what ``last.pt`` saves beside the model, optimizer, schedule, scaler, EMA, loader and random streams.
The model is a black box: the loop calls its forward, ``set_grad_checkpointing``, and (through vitkit.optim)
``no_weight_decay`` / ``layer_id``. Figures (curves, report) are drawn by whoever ran the training (vitkit.viz).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..data.datasets import split_summary
from ..data.resolution import ResolutionSchedule, scheduled_batches
from ..models.contract import VitkitModel
from ..optim import apply_gradients, build_optimizer, clip_gradients
from ..runtime import amp_context, resolve_device, resolve_precision
from ..utils.allocator import retain_freed_memory
from ..utils.fileio import atomic_path, atomic_write_text, remove_stale_temporaries
from .autobatch import find_micro_batch
from .checkpoint import (
    capture_rng,
    check_resume_config,
    keep_history,
    load_train_state,
    resolve_resume,
    restore_rng,
    save_train_state,
)
from .config import Config
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    load_model_and_optimizer,
    model_state_dict,
    no_sync,
    optimizer_state_dict,
    setup_distributed,
    wrap_model,
)
from .evaluate import evaluate
from .monitor import Monitor, block_grad_norms, peak_memory_mb
from .schedule import build_scheduler
from .state import LoopState

INTERRUPTED = "interrupted"  # the stop reason of a run stopped by Ctrl-C (SIGINT)

#: called after every optimizer step with the loop's state (e.g. to log elsewhere, or to inject a fault in a test)
StepCallback = Callable[[LoopState], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and where the debug state was saved."""


def build_model(cfg: Config, num_classes: int, in_chans: int, img_size: tuple[int, int]) -> nn.Module:
    from ..weights import create_model

    overrides: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "img_size": img_size}
    if cfg.model.token_keep_rate < 1.0:
        overrides["token_keep_rate"] = cfg.model.token_keep_rate
    for key in ("drop_path_rate", "drop_rate"):
        if getattr(cfg.model, key) is not None:
            overrides[key] = getattr(cfg.model, key)
    if cfg.data.size_schedule:  # batches of other sizes: the position embedding is resampled per call
        overrides["dynamic_img_size"] = True
    return create_model(cfg.model.name, pretrained=cfg.model.pretrained, **overrides, **cfg.model.kwargs)


def build_datasets(cfg: Config) -> tuple:
    """The (train, val, test) datasets a config trains on, as the training loop builds them."""
    from ..data import build_dataset

    common = dict(val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, cache_dir=cfg.data.cache_dir,
                  num_workers=cfg.data.num_workers, img_size=cfg.data.img_size, crop_pct=cfg.data.crop_pct,
                  augment=cfg.data.augment, storage_size=cfg.data.storage_size,
                  eval_crop=cfg.data.pipeline == "batch")  # per_sample: the eval transform crops
    kind = {"root": cfg.data.root, **cfg.data.kwargs} if cfg.data.root else dict(cfg.data.kwargs)
    return tuple(build_dataset(cfg.data.name, split, **common, **kind) for split in ("train", "val", "test"))


def _resume_after_elastic_restart(cfg: Config, info: DistInfo, device: torch.device) -> None:
    """torchrun --max-restarts: a restarted worker group continues the run its previous attempt checkpointed (the
    newest run of this run_name); with nothing checkpointed yet it starts afresh. The ranks decide together: a machine
    that joined the restarted group afresh counts no restart of its own, and every rank must continue the run that
    rank 0 found, or none."""
    if cfg.checkpoint.resume:
        return
    if all_reduce_max(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), device, info) == 0:
        return
    found = None
    if info.is_main:
        with contextlib.suppress(FileNotFoundError):
            found = str(resolve_resume("auto", cfg.checkpoint.out_dir,
                                       cfg.checkpoint.run_name or cfg.model.name).parent)
    found = broadcast_object(found, info)
    if found is not None:
        cfg.checkpoint.resume = found


def train(cfg: Config, model: nn.Module | None = None, callbacks: Iterable[StepCallback] = ()) -> dict[str, Any]:
    """Train as ``cfg`` says and return the summary (also saved as summary.json in the run directory).

    ``model``: a ready module to train instead of building ``cfg.model.name`` (it must accept the data's shapes).
    ``callbacks``: functions called after every optimizer step with the loop's :class:`LoopState`.
    """
    cfg.validate()
    t_start = time.perf_counter()
    wants_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
    info = setup_distributed(cfg.dist, "cuda" if wants_cuda else "cpu")
    try:
        device = resolve_device(cfg.train.device, info.local_rank)
        _resume_after_elastic_restart(cfg, info, device)
        return Trainer(cfg, model, info, device, t_start, tuple(callbacks)).run()
    finally:
        cleanup(info)


class Trainer:
    """One training run: built by ``__init__``, carried out by ``run``."""

    # --- 1. setup --------------------------------------------------------------------------------------------------

    def __init__(self, cfg: Config, model: nn.Module | None, info: DistInfo, device: torch.device, t_start: float,
                 callbacks: tuple[StepCallback, ...] = ()) -> None:
        self.cfg, self.info, self.device, self.t_start, self.callbacks = cfg, info, device, t_start, callbacks
        tc = cfg.train
        self.precision = precision = resolve_precision(tc.precision, device)
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("train.precision='fp16' needs CUDA; on a CPU use 'bf16'")
        if tc.ema and info.strategy == "fsdp":
            raise ValueError("train.ema is not supported with dist.strategy='fsdp' (the average would need the full "
                             "weights on every rank); turn one of them off")
        _configure_process(cfg)

        # data and model (pretrained weights first: a repo missing from the cache fails before any decoding)
        if cfg.model.pretrained and model is None:
            from ..weights.pretrained import fetch_pretrained

            fetch_pretrained(cfg.model.name, cfg.model.pretrained)
        self.train_ds, self.val_ds, self.test_ds = build_datasets(cfg)
        native = tuple(self.train_ds.meta.get("train_size") or self.train_ds.image_size)  # photos: stored larger
        self.size = size = (cfg.data.img_size,) * 2 if cfg.data.img_size else native
        self.out_size = None if size == native else size
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        if model is None:
            model = build_model(cfg, self.train_ds.num_classes, self.train_ds.channels, size)
        self.raw_model = model  # parameter names and state dicts always come from the unwrapped module
        self.mean, self.std = self.train_ds.mean, self.train_ds.std
        if cfg.model.pretrained and isinstance(model, VitkitModel) and \
                len(model.data_config.get("mean", ())) == self.train_ds.channels:
            self.mean, self.std = model.data_config["mean"], model.data_config["std"]  # the normalisation it learned
        self.resolution = _resolution_schedule(cfg, model, size)
        model.to(device)
        if tc.channels_last:
            model.to(memory_format=torch.channels_last)
        if tc.grad_checkpointing:
            model.set_grad_checkpointing(True)

        # batch geometry: global micro-batch x accumulation = effective batch
        if cfg.data.batch_size % info.world_size:
            raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by the {info.world_size} "
                             "processes")
        self.accum, self.per_rank = tc.accum_steps, cfg.data.batch_size // info.world_size
        if tc.auto_batch:
            micro = find_micro_batch(self.per_rank * self.accum, device, tc.cpu_batch_cap,
                                     lambda b: _try_batch(model, b, self.train_ds.channels, size, device, precision))
            self.accum, self.per_rank = self.per_rank * self.accum // micro, micro
        self.geometry = [self.per_rank, self.accum, info.world_size]
        self._build_loaders()
        self.batches = len(self.train_loader)
        if self.batches == 0:
            raise ValueError(f"the training split has {len(self.train_ds)} images, fewer than one batch of "
                             f"{self.per_rank}")
        self.steps_per_epoch = math.ceil(self.batches / self.accum)
        self.total_steps = min(tc.epochs * self.steps_per_epoch, tc.max_steps or 10**18)
        self._build_objective()

        # optimizer, schedule, scaler, EMA, wrappers
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) \
            if tc.ema else None
        self.model = wrap_model(model, info, device)
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch, self.total_steps,
                                         by_progress=bool(tc.time_budget_s) or cfg.data.size_schedule_batch == "scale")
        self.schedule_fn = self.scheduler.lr_lambdas[0]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        if tc.compile:
            self.model = torch.compile(self.model)
        torch.manual_seed(tc.seed + info.rank)  # dropout / drop-path / token-dropout streams differ per rank

        # run directory: a new one, or the resumed run's
        self.state, self.resumed_loader = LoopState(epoch_sums=torch.zeros(3, dtype=torch.float64, device=device)), None
        if cfg.checkpoint.resume:
            self.run_dir = self._resume()
        else:
            self.run_dir = _new_run_dir(cfg, info)
        if info.is_main:
            remove_stale_temporaries(self.run_dir)  # half-written files of a killed process of this run
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        self.monitor = Monitor(self.run_dir, cfg.log, enabled=info.is_main,
                               resume_step=self.state.step if cfg.checkpoint.resume else None)
        report = getattr(self.raw_model, "load_report", None)  # set by a pretrained (fine-tuning) load
        if report is not None:
            self.monitor.print(f"pretrained: {report.describe()}")
        params = sum(p.numel() for p in self.raw_model.parameters()) / 1e6
        self.monitor.print(
            f"run {self.run_dir}: {cfg.model.name}, {params:.2f}M params, {len(self.train_ds)} train images, batch "
            f"{self.per_rank}x{info.world_size} procs x{self.accum} accum, {self.steps_per_epoch} steps/epoch, "
            f"{self.total_steps} steps, {precision} on {device}")
        self.t_loop, self.elapsed_before = time.perf_counter(), self.state.elapsed_s

    def _build_loaders(self) -> None:
        from ..data import build_loader
        from ..data.preprocess import evaluation_transform, training_preprocessing

        cfg, info, device = self.cfg, self.info, self.device
        train_tf = eval_tf = None
        # what evaluation does to a source image: stored in every checkpoint (save_weights), so that vitkit eval,
        # predict, serve and the exports preprocess as this run evaluated
        self.preprocessing = training_preprocessing(self.size, mean=self.mean, std=self.std,
                                                    in_chans=self.train_ds.channels, crop_pct=cfg.data.crop_pct,
                                                    eval_dataset=self.val_ds)
        if cfg.data.pipeline == "per_sample":  # workers decode, crop, augment, normalise each image: float batches
            from ..data.transforms import build_train_transform

            train_tf = build_train_transform(
                self.size, mean=self.mean, std=self.std, scale=(cfg.data.scale_min, 1.0),
                hflip=0.5 if cfg.data.flip else 0.0, random_crop_padding=cfg.data.crop_padding or None,
                auto_augment=cfg.data.auto_augment, magnitude=cfg.data.randaugment_magnitude,
                num_ops=cfg.data.randaugment_num_ops, random_erasing=cfg.data.random_erasing)
            eval_tf = evaluation_transform(self.preprocessing, self.val_ds)
        self.train_loader = build_loader(self.train_ds, self.per_rank, train=True, seed=cfg.train.seed, device=device,
                                         transform=train_tf, num_workers=cfg.data.num_workers, rank=info.rank,
                                         world_size=info.world_size,
                                         channels_last=self.photo_augment() and train_tf is None)
        eval_bs = max(1, (cfg.data.eval_batch_size or 2 * cfg.data.batch_size) // info.world_size)
        self.val_loader, self.test_loader = (
            build_loader(ds, eval_bs, train=False, device=device, num_workers=cfg.data.num_workers, transform=eval_tf,
                         rank=info.rank, world_size=info.world_size)
            for ds in (self.val_ds, self.test_ds))

    def photo_augment(self) -> bool:
        """Whether training crops like photos: chosen by the data unless the config says. Photos get RandomResizedCrop
        + flip from the larger stored image, small (CIFAR-sized) images a pad-crop of the whole image."""
        chosen = self.cfg.data.augment
        return (self.train_ds.meta.get("augment", "small") if chosen == "auto" else chosen) == "photo"

    def _build_objective(self) -> None:
        """Batch augmentation, the loss, and (when distilling) the teacher."""
        from ..data import BatchAugment

        cfg, tc, classes, chans = self.cfg, self.cfg.train, self.train_ds.num_classes, self.train_ds.channels
        per_sample = cfg.data.pipeline == "per_sample"
        mixing = cfg.data.mixup_alpha > 0 or cfg.data.cutmix_alpha > 0
        self.aug_gen = torch.Generator().manual_seed(tc.seed * 1009 + self.info.rank)
        photo = self.photo_augment()
        # the flip is on for photos unless data.flip says
        flip = photo if cfg.data.flip is None else cfg.data.flip
        # batch pipeline: crop/flip/normalise/resize + mixing here; per_sample: only the mixing (identity normalisation)
        self.augment = BatchAugment(
            classes, (0.0,) * chans if per_sample else self.mean, (1.0,) * chans if per_sample else self.std,
            crop_padding=0 if per_sample else cfg.data.crop_padding, flip=flip and not per_sample,
            mixup_alpha=cfg.data.mixup_alpha, cutmix_alpha=cfg.data.cutmix_alpha, mix_prob=cfg.data.mix_prob,
            switch_prob=cfg.data.switch_prob, label_smoothing=tc.label_smoothing if mixing else 0.0,
            out_size=None if per_sample else (self.size if photo else self.out_size), generator=self.aug_gen,
            crop="resized" if photo and not per_sample else "pad", scale=(cfg.data.scale_min, 1.0),
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if mixing else tc.label_smoothing)  # soft if mixing
        self.distiller = None
        if tc.distill.enabled:  # a frozen teacher joins the loss; a DeiT student returns (class, distill) logits
            from .distill import build_distiller

            self.distiller = build_distiller(tc.distill, classes, self.criterion, self.precision, self.device,
                                             self.mean, self.std)
            if hasattr(self.raw_model, "set_distilled_training"):
                self.raw_model.set_distilled_training(True)

    def _resume(self) -> Path:
        cfg = self.cfg
        path = resolve_resume(cfg.checkpoint.resume, cfg.checkpoint.out_dir, cfg.checkpoint.run_name or cfg.model.name)
        saved = load_train_state(path)
        check_resume_config(path, saved["config"], cfg.to_dict())
        if saved["geometry"] != self.geometry:
            raise ValueError(f"{path} was saved with (batch per process, accum_steps, processes) = "
                             f"{tuple(saved['geometry'])}, this run has {tuple(self.geometry)}")
        load_model_and_optimizer(self.model, self.raw_model, self.optimizer, saved["model"], saved["optimizer"],
                                 self.info)
        fresh_schedule = dict(self.schedule_fn.__dict__)
        self.scheduler.load_state_dict(saved["scheduler"])
        for fn in self.scheduler.lr_lambdas:  # the schedule's shape follows this run's config (e.g. a raised max_steps)
            fn.__dict__.update(fresh_schedule)
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.state = LoopState.from_dict(saved, self.device)
        self.state.stop_reason = None  # why the saved run stopped; this run decides for itself
        self.resumed_loader = saved["loader"] if self.state.batch else None
        restore_rng(saved["rng"], self.aug_gen)
        return path.parent

    # --- 2. the run ------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.model.train()
        with self._stop_on_interrupt():
            while self.state.epoch < self.cfg.train.epochs and self.state.stop_reason is None:
                self.train_epoch()
                self.end_epoch()
        return self.finish()

    @contextlib.contextmanager
    def _stop_on_interrupt(self):
        """Ctrl-C once: finish the current optimizer step, save last.pt and the summary, stop. Ctrl-C twice: Python's
        own KeyboardInterrupt, at once (every file on disk is whole: writes are atomic)."""
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        # A process started with SIGINT ignored (a background job, some launchers and test runners) has no Python
        # handler to go back to: there the second Ctrl-C gets Python's own, so that it still exits at once.
        second = previous if callable(previous) else signal.default_int_handler

        def request_stop(signum, frame) -> None:
            self.interrupted = True
            signal.signal(signal.SIGINT, second)  # the second Ctrl-C is not ours to soften
            self.monitor.print("interrupt: stopping after this optimizer step (Ctrl-C again to exit at once)")

        signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def elapsed(self) -> float:
        """Training seconds so far (this process and any run it resumed): what train.time_budget_s counts."""
        return self.elapsed_before + time.perf_counter() - self.t_loop

    def progress(self) -> float:
        """The fraction of the run done: of the time budget when there is one, else of the data (batches merged by
        data.size_schedule_batch='scale' make steps uneven, so steps do not measure it), else of the steps."""
        tc, s = self.cfg.train, self.state
        if tc.time_budget_s:
            return self.elapsed() / tc.time_budget_s
        if self.cfg.data.size_schedule_batch == "scale":
            return (s.epoch * self.batches + s.batch) / (tc.epochs * self.batches)
        return s.step / self.total_steps

    # --- 3. one epoch of steps -------------------------------------------------------------------------------------

    def train_epoch(self) -> None:
        s, loader = self.state, self.train_loader
        if self.resumed_loader is not None:
            loader.load_state_dict(self.resumed_loader)  # continue mid-epoch, data order intact
            self.resumed_loader = None
        else:
            loader.set_epoch(s.epoch)
        self.monitor.start_epoch(s.epoch, self.cfg.train.epochs, self.steps_per_epoch, s.batch // self.accum)
        self.t_epoch = self.t_log = t_wait = time.perf_counter()
        self.wait = 0.0
        self.log_sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # since the last log line
        self.log_images = 0
        self.step_loss = torch.zeros((), device=self.device)
        for batch in scheduled_batches(loader, self.resolution, self.progress):
            self.wait += time.perf_counter() - t_wait
            last = s.batch + batch.loader_batches - 1  # index of this batch's last loader batch in the epoch
            group_start = last - last % self.accum
            group_size = min(self.accum, self.batches - group_start)  # the epoch's last group may be short
            self.micro_step(batch, group_size, skip_sync=last != group_start + group_size - 1)
            s.batch = last + 1
            if last == group_start + group_size - 1:
                self.optimizer_step()
                if s.stop_reason is not None:
                    break
            t_wait = time.perf_counter()
        self.monitor.end_epoch()

    def micro_step(self, batch, group_size: int, skip_sync: bool) -> None:
        """Forward, loss and backward of one micro-batch; gradients accumulate until the group's last one."""
        s = self.state
        if batch.size is not None:  # progressive resolution: resize on the device unless already that size
            self.augment.out_size = None if batch.size == tuple(batch.images.shape[-2:]) else batch.size
        x, y = self.augment(batch.images, batch.labels)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with no_sync(self.model, skip=skip_sync), amp_context(self.device, self.precision):
            out = self.model(x)
            logits, loss = self.distiller(x, out, y) if self.distiller else (out, self.criterion(out.float(), y))
        self.scaler.scale(loss / group_size).backward()
        self.step_loss += loss.detach() / group_size
        hard = y if y.ndim == 1 else y.argmax(1)
        stats = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == hard).sum().double(),
                             torch.tensor(len(y), dtype=torch.float64, device=self.device)])
        self.log_sums += stats
        s.epoch_sums += stats
        self.log_images += len(y) * self.info.world_size
        s.images_seen += len(y) * self.info.world_size

    def optimizer_step(self) -> None:
        """Clip, step, schedule, EMA; then log, checkpoint, callbacks and the stop conditions."""
        cfg, tc, s, info = self.cfg, self.cfg.train, self.state, self.info
        if info.enabled:  # every rank must agree to stop, or the others would hang in the next all-reduce
            self.step_loss.fill_(all_reduce_sum([float(self.step_loss)], self.device, info)[0])
        if self.precision != "fp16" and not torch.isfinite(self.step_loss):  # fp16: the scaler skips such steps
            debug = self.run_dir / f"nonfinite-step{s.step + 1}.pt"
            self.save_last(debug.name)
            raise NonFiniteLossError(
                f"non-finite loss ({float(self.step_loss)}) at optimizer step {s.step + 1} (epoch {s.epoch + 1}, "
                f"batch {s.batch}/{self.batches}); the state before this step is saved in {debug}")
        log_now = (s.step + 1) % cfg.log.every_steps == 0
        grad_norm = clip_gradients(self.optimizer, self.scaler, self.model.parameters(), cfg.optim.clip_grad_norm,
                                   need_norm=log_now)
        blocks = block_grad_norms(self.raw_model) if cfg.log.block_grad_every and \
            (s.step + 1) % cfg.log.block_grad_every == 0 else None
        apply_gradients(self.optimizer, self.scaler)
        if self.schedule_fn.by_progress:
            self.schedule_fn.progress = self.progress()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        s.step += 1
        self.step_loss.zero_()

        if log_now:
            self.log_step(grad_norm, blocks)
        else:
            self.monitor.step(1)
        if cfg.checkpoint.every_steps and s.step % cfg.checkpoint.every_steps == 0 and s.batch < self.batches:
            self.save_last()
        for callback in self.callbacks:
            callback(s)
        if s.step >= self.total_steps:
            s.stop_reason = f"reached train.max_steps={self.total_steps}" \
                if self.total_steps < tc.epochs * self.steps_per_epoch else "finished"
        elif tc.time_budget_s and _agree(self.elapsed() >= tc.time_budget_s, self.device, info):
            s.stop_reason = f"reached train.time_budget_s={tc.time_budget_s:g}"
        elif self._interrupt_agreed(log_now):
            s.stop_reason = INTERRUPTED

    def _interrupt_agreed(self, log_now: bool) -> bool:
        """Whether Ctrl-C stops the run at this step; under torchrun the ranks agree at logging steps only, so an
        interrupt costs no extra collective on the others."""
        if not self.info.enabled:
            return self.interrupted
        return log_now and _agree(self.interrupted, self.device, self.info)

    def log_step(self, grad_norm: torch.Tensor | None, blocks: dict | None) -> None:
        s, sums, now = self.state, self.log_sums, time.perf_counter()
        record = {
            "kind": "step", "step": s.step, "epoch": s.epoch + s.batch / self.batches,
            "train_loss": float(sums[0] / sums[2]), "train_acc1": float(sums[1] / sums[2] * 100),
            "lr": self.scheduler.get_last_lr()[-1], "grad_norm": float(grad_norm),
            "img_per_s": self.log_images / (now - self.t_log), "data_wait": self.wait / (now - self.t_log),
            "mem_mb": peak_memory_mb(self.device),
        }
        if blocks:
            record["block_grad_norm"] = blocks
        self.monitor.step(1, {"loss": record["train_loss"], "acc": record["train_acc1"], "lr": record["lr"],
                              "img/s": round(record["img_per_s"])})
        self.monitor.log(record, s.step, line=True)
        sums.zero_()
        self.t_log, self.wait, self.log_images = now, 0.0, 0

    # --- 4. end of epoch -------------------------------------------------------------------------------------------

    def end_epoch(self) -> None:
        """Validate, keep the best weights, early stopping, then ``last.pt`` (pointing at where to continue)."""
        cfg, tc, s = self.cfg, self.cfg.train, self.state
        epoch_done = s.batch >= self.batches
        loss_sum, correct, count = all_reduce_sum(s.epoch_sums.tolist(), self.device, self.info)
        record = {"kind": "epoch", "step": s.step, "epoch": s.epoch + s.batch / self.batches,
                  "epoch_time_s": time.perf_counter() - self.t_epoch,
                  "train_loss": loss_sum / max(count, 1), "train_acc1": correct / max(count, 1) * 100}
        due = (s.epoch + 1) % tc.eval_every == 0 or s.epoch + 1 == tc.epochs or s.stop_reason is not None
        if due and s.stop_reason != INTERRUPTED:  # an interrupted run stops without another evaluation
            record.update(self.validate())
        record["elapsed_s"] = self.elapsed()  # after validation: the time this accuracy was reached
        self.monitor.log(record, s.step, line=True)
        if self.monitor.mode == "bar":
            self.monitor.print("  ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))
        if epoch_done:
            s.next_epoch()
        self.save_last()
        if self.info.is_main and epoch_done:
            keep_history(self.run_dir, s.epoch, cfg.checkpoint.keep_last)

    def validate(self) -> dict[str, float]:
        cfg, tc, s = self.cfg, self.cfg.train, self.state
        val = self.evaluate(self.raw_model, self.val_loader)
        record = {"val_loss": val["loss"], "val_acc1": val["acc1"], "val_acc5": val["acc5"]}
        if self.ema is not None:
            ema_val = self.evaluate(self.ema.module, self.val_loader)
            record.update(val_ema_loss=ema_val["loss"], val_ema_acc1=ema_val["acc1"])
            self.save_weights(self.ema.module, "ema.safetensors",
                              {"epoch": s.epoch + 1, "step": s.step, "val_acc1": ema_val["acc1"]})
        metric = cfg.checkpoint.metric
        value = record[metric]
        sign = 1 if metric == "val_acc1" else -1
        if s.best is None or sign * (value - s.best) > tc.early_stop_min_delta:
            s.best, s.bad_epochs = value, 0
            self.save_weights(self.raw_model, "best.safetensors", {"epoch": s.epoch + 1, "step": s.step, metric: value})
        else:
            s.bad_epochs += 1
        if tc.early_stop_patience and s.bad_epochs >= tc.early_stop_patience:
            s.stop_reason = f"early stop: {metric} did not improve for {s.bad_epochs} evaluations"
        return record

    def evaluate(self, module: nn.Module, loader) -> dict:
        """Under DDP through the plain module: DDP's forward may broadcast buffers, a collective that would hang
        when the ranks' eval shards differ by a batch. FSDP2 needs its wrapper; evaluate() keeps ranks in step."""
        module = self.model if module is self.raw_model and self.info.strategy == "fsdp" else module
        return evaluate(module, loader, num_classes=self.train_ds.num_classes, mean=self.mean, std=self.std,
                        device=self.device, precision=self.precision, out_size=self.out_size, info=self.info,
                        hflip_tta=self.cfg.data.eval_hflip_tta)

    # --- checkpoints -----------------------------------------------------------------------------------------------

    def training_state(self) -> dict:
        """Everything to continue bit for bit. Under FSDP2 a collective (the full state is gathered to rank 0)."""
        self.state.elapsed_s = self.elapsed()
        return {
            **self.state.as_dict(),
            "model": model_state_dict(self.model, self.raw_model, self.info),
            "optimizer": optimizer_state_dict(self.model, self.optimizer, self.info),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "loader": self.train_loader.state_dict(), "geometry": self.geometry, "rng": capture_rng(self.aug_gen),
            "config": self.cfg.to_dict(),
        }

    def save_last(self, name: str = "last.pt") -> None:
        info = self.info
        state = self.training_state() if info.is_main or info.strategy == "fsdp" else None
        if info.is_main:
            save_train_state(self.run_dir / name, state)

    def save_weights(self, module: nn.Module, name: str, extra: dict) -> None:
        """A vitkit .safetensors that rebuilds the model by itself (under FSDP2 the full weights, gathered)."""
        from ..models.registry import build_from_config
        from ..weights import save_checkpoint

        info = self.info
        weights = model_state_dict(self.model, module, info) if info.strategy == "fsdp" else None
        if not info.is_main:
            return
        meta = {"class_names": list(self.train_ds.classes), "mean": list(self.mean), "std": list(self.std),
                "dataset": self.cfg.data.name, "img_size": list(self.size),
                "preprocessing": self.preprocessing.to_dict(),
                # how val was carved out of train, so `vitkit eval --split val` evaluates the same images
                "data_split": {"val_fraction": self.cfg.data.val_fraction, "seed": self.cfg.train.seed}, **extra}
        if weights is not None:  # an unsharded twin on the meta device, filled with the gathered tensors
            with torch.device("meta"):
                twin = build_from_config(module.arch, module.config)
            twin.load_state_dict(weights, assign=True)
            twin.model_name, twin.data_config = self.cfg.model.name, module.data_config
            module = twin
        if isinstance(module, VitkitModel):
            save_checkpoint(module, self.run_dir / name, metadata=meta)
        else:  # a user module (train(cfg, model=...)) that vitkit cannot rebuild: its weights alone
            from safetensors.torch import save_file

            with atomic_path(self.run_dir / name) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                          str(tmp), metadata={"extra": json.dumps(meta)})

    # --- 5. the end ------------------------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Test the best weights (the final ones under FSDP2) and write summary.json."""
        cfg, s, info = self.cfg, self.state, self.info
        train_time = self.elapsed()  # the loop's wall clock, validations included: what a time budget is compared to
        barrier(info)
        summary: dict[str, Any] = {
            "run_dir": str(self.run_dir), "model": cfg.model.name, "data": cfg.data.name, "steps": s.step,
            "epochs": s.epoch, "micro_batch": self.per_rank * info.world_size, "accum_steps": self.accum,
            "processes": info.world_size, "rank": info.rank, "precision": self.precision,
            "stop_reason": s.stop_reason or "finished"}
        summary.update(split_summary(self.train_ds, self.val_ds, self.test_ds))  # which split the test figures are on
        best_path = self.run_dir / "best.safetensors"
        summary["test_weights"] = "final" if info.strategy == "fsdp" or not best_path.is_file() else "best"
        if summary["test_weights"] == "best":
            from ..weights import read_state_dict

            self.raw_model.load_state_dict(read_state_dict(best_path))
        interrupted = s.stop_reason == INTERRUPTED
        test = {"acc1": None, "acc5": None, "loss": None, "count": 0} if interrupted else \
            self.evaluate(self.raw_model, self.monitor.track(self.test_loader, "test"))
        summary.update({
            f"best_{cfg.checkpoint.metric}": s.best, "test_acc1": test["acc1"], "test_acc5": test["acc5"],
            "test_loss": test["loss"], "test_images": test["count"], "train_time_s": train_time,
            "train_images": s.images_seen, "train_img_per_s": _mean_throughput(self.monitor.history),
            "peak_mem_mb": peak_memory_mb(self.device), "best_checkpoint": str(best_path),
            "last_state": str(self.run_dir / "last.pt"),
        })
        if self.ema is not None and not interrupted:
            summary["test_ema_acc1"] = self.evaluate(self.ema.module, self.monitor.track(self.test_loader,
                                                                                         "test (EMA)"))["acc1"]
        summary["wall_time_s"] = time.perf_counter() - self.t_start  # everything this process did, EMA test included
        self.monitor.print("summary: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in summary.items()))
        self.monitor.finish(summary)
        if interrupted:
            self.monitor.print(f"interrupted at step {s.step}; continue with: vitkit train --resume {self.run_dir}")
        return summary


def _configure_process(cfg: Config) -> None:
    """Process-wide settings a run asks for: the allocator, the thread count, deterministic kernels."""
    if cfg.train.retain_freed_memory:
        retain_freed_memory()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _resolution_schedule(cfg: Config, model: nn.Module, native: tuple[int, int]) -> ResolutionSchedule | None:
    if not cfg.data.size_schedule:
        return None
    patch = getattr(model, "patch_size", None)
    patch = patch if isinstance(patch, int) else (patch or (1,))[0]
    bad = [side for _, side in cfg.data.size_schedule if side % patch]
    if bad:
        raise ValueError(f"data.size_schedule sizes {bad} are not multiples of the model's patch size {patch} "
                         f"(model {cfg.model.name} at {native[0]}x{native[1]})")
    return ResolutionSchedule([tuple(x) for x in cfg.data.size_schedule], native,
                              scale_batch=cfg.data.size_schedule_batch == "scale")


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


def _agree(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank when any rank says so: clocks differ, and a rank that stopped alone would hang the rest."""
    return bool(all_reduce_sum([float(flag)], device, info)[0]) if info.enabled else flag


def _mean_throughput(history: list[dict]) -> float | None:
    values = [r["img_per_s"] for r in history if r.get("kind") == "step" and "img_per_s" in r]
    return sum(values) / len(values) if values else None


def _try_batch(model: nn.Module, batch: int, chans: int, size, device: torch.device, precision: str) -> None:
    x = torch.zeros(batch, chans, *size, device=device)
    try:
        with amp_context(device, precision):
            model(x).float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)


__all__ = ["train", "build_model", "build_datasets", "Trainer", "StepCallback", "NonFiniteLossError"]
