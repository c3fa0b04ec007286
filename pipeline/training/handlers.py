"""Ignite event handlers the training bundle adds to MONAI's: checkpoints, resume, sampler epochs, clipping, progress, overlays.

What a checkpoint holds and how it is loaded lives in :mod:`pipeline.core.checkpoints`; this module
only attaches it to the training engine.

Each handler follows MONAI's handler pattern: configured in ``__init__``, connected to an engine
by ``attach(engine)``, so the bundle configs list them next to MONAI's own handlers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from tqdm.auto import tqdm

from pipeline.core.checkpoints import (
    DEFAULT_EMA_DECAY,
    DEFAULT_KEPT_WEIGHTS,
    KEPT,
    LATEST,
    check_ema_decay,
    check_kept_weights,
    ema_state,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from pipeline.tasks.task import DEFAULT_TASK, Task, TaskSpec, resolve_task
from pipeline.training.workflow import is_rank_zero
from pipeline.visualize.overlays import figure_rgb, overlay_figure

__all__ = ["GradientClipping", "PredictionOverlay", "SamplerEpoch", "TrainingCheckpoint", "TrainingProgress"]



logger = logging.getLogger(__name__)


class TrainingCheckpoint:
    """Full-state checkpoints every epoch, the best weights by a validation metric, and resume.

    After each epoch (attach it after ``ValidationHandler`` so the epoch's validation has run)
    ``models/latest.pt`` receives the network, optimizer, scheduler and AMP scaler states, the
    epoch and iteration, the Python/NumPy/torch random states and the best metric so far.
    ``models/model.pt`` receives the network's plain ``state_dict``: with ``keep="best"`` when the
    key metric improved, with ``keep="last"`` after every epoch (the final weights, chosen by the
    training schedule alone, so that a few validation patients do not pick the epoch), with
    ``keep="ema"`` the exponential moving average of the weights after every iteration (decay
    ``ema_decay``: torch's ``AveragedModel``; the validation still scores the trained network).
    Both are written atomically; ``latest.pt`` also holds the average under ``ema``. With
    ``resume`` the trainer restarts from ``latest.pt``.

    Args:
        ckpt_dir: the folder of the checkpoints (``RUN_DIR/models``).
        network: the trained network (DDP or compiled wrappers are unwrapped).
        optimizer: its optimizer.
        lr_scheduler: the learning-rate scheduler, if any.
        evaluator: the validation engine whose ``key_metric`` selects the best weights.
        key_metric: name of the metric in ``evaluator.state.metrics`` (higher is better).
        resume: continue from ``latest.pt`` (an error if it does not exist).
        stop_after_epoch: end the run after this epoch, its checkpoint written (the schedule still
            spans all epochs), e.g. to train in chunks that fit a job's time limit; ``None`` runs to the end.
        keep: which weights ``model.pt`` holds, one of :data:`pipeline.core.checkpoints.KEPT_WEIGHTS`.
        ema_decay: the moving average's decay per iteration under ``keep="ema"`` (0.995: the last
            200 or so iterations carry 63% of the weight).
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        evaluator: Engine | None = None,
        key_metric: str = "val_mean_dice",
        resume: bool = False,
        stop_after_epoch: int | None = None,
        keep: str = DEFAULT_KEPT_WEIGHTS,
        ema_decay: float = DEFAULT_EMA_DECAY,
    ) -> None:
        self.keep = check_kept_weights(keep)
        self.ema_decay = check_ema_decay(ema_decay)
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        self.ckpt_dir = Path(ckpt_dir)
        self.stop_after_epoch = stop_after_epoch
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.key_metric = key_metric
        self.resume = resume
        self.best_metric = -1.0
        self.best_metric_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        if self.keep == "ema":
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.average)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def average(self, engine: Engine) -> None:
        """Fold the weights after this iteration's optimizer step into the moving average."""
        if self.ema is not None:
            self.ema.update_parameters(unwrap(self.network))

    def start(self, engine: Engine) -> None:
        """Start the moving average (``keep="ema"``); resume from ``latest.pt`` when asked (whether to is decided before the run by :func:`pipeline.core.checkpoints.decide_resume`)."""
        if self.keep == "ema":
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            # use_buffers: normalisation statistics are averaged with the weights, so the average is a whole network
            self.ema = AveragedModel(unwrap(self.network), multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
        if not self.resume:
            return
        latest = self.ckpt_dir / LATEST
        state = load_training_state(latest, self.network)
        if self.ema is not None:
            self.ema.load_state_dict(ema_state(state, latest))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.best_metric = float(state.get("best_metric", -1.0))
        self.best_metric_epoch = int(state.get("best_metric_epoch", -1))
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        if is_rank_zero():
            message = f"resuming from {latest} (epoch {engine.state.epoch} of {engine.state.max_epochs} done, best {self.key_metric} {self.best_metric:.4f})"
            logger.info(message)
            print(message, flush=True)

    def epoch_completed(self, engine: Engine) -> None:
        """Record the best weights if validation improved this epoch, then write ``latest.pt``."""
        evaluator = self.evaluator
        if evaluator is not None and evaluator.state.epoch == engine.state.epoch and self.key_metric in evaluator.state.metrics:
            value = float(evaluator.state.metrics[self.key_metric])
            if value > self.best_metric:
                self.best_metric, self.best_metric_epoch = value, engine.state.epoch
                if is_rank_zero() and self.keep == "best":
                    save_checkpoint(unwrap(self.network).state_dict(), self.ckpt_dir / KEPT)
                    logger.info(f"new best {self.key_metric} {value:.4f} at epoch {engine.state.epoch}: saved {self.ckpt_dir / KEPT}")
        if self.keep != "best" and is_rank_zero():  # last and ema: rewritten every epoch
            kept = self.ema.module if self.ema is not None else unwrap(self.network)
            save_checkpoint(kept.state_dict(), self.ckpt_dir / KEPT)
        if self.stop_after_epoch is not None and engine.state.epoch >= int(self.stop_after_epoch):
            engine.terminate()
        if not is_rank_zero():
            return
        scaler = getattr(engine, "scaler", None)
        payload = {
            "network": unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "rng": rng_state(),
            "best_metric": self.best_metric,
            "best_metric_epoch": self.best_metric_epoch,
        }
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        save_checkpoint(payload, self.ckpt_dir / LATEST)


class SamplerEpoch:
    """Call ``set_epoch`` on the data loader's sampler (and the device augmentation, if any) at the start of each epoch.

    MONAI's workflow does this only for ``DistributedSampler``; the foreground-weighted sampler
    also needs it, since it seeds each epoch's draws (and augmentations) from the epoch, and so
    does :class:`pipeline.training.device_augmentation.DeviceAugmentation`.

    Args:
        data_loader: the training data loader.
        augmentation: the trainer's device augmentation (``augment_on: device``), or ``None``.
    """

    def __init__(self, data_loader: torch.utils.data.DataLoader, augmentation: Any = None) -> None:
        self.data_loader = data_loader
        self.augmentation = augmentation

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        sampler = getattr(self.data_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(engine.state.epoch)
        if self.augmentation is not None:
            self.augmentation.set_epoch(engine.state.epoch)


class GradientClipping:
    """Clip the gradient norm after the backward pass, before the optimizer step (unscaled first under AMP).

    Args:
        max_norm: the largest total gradient norm; ``None`` or ``0`` disables clipping.
    """

    def __init__(self, max_norm: float | None = None) -> None:
        self.max_norm = max_norm

    def attach(self, engine: Engine) -> None:
        if self.max_norm:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if engine.amp and scaler is not None:
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), float(self.max_norm))


class TrainingProgress:
    """A tqdm bar per epoch with the loss and samples/s; sets ``state.samples_per_second`` and ``state.learning_rate``.

    ignite's ``ProgressBar`` shows iterations per second; slices or patches per second are what
    compare across batch sizes, so this bar counts samples.

    Args:
        batch_size: samples per iteration (per process).
        world_size: number of processes training together.
        progress: show the bar (the attributes are set either way).
    """

    def __init__(self, batch_size: int, world_size: int = 1, progress: bool = True) -> None:
        self.batch_size = batch_size
        self.world_size = world_size
        self.progress = progress
        self._bar: tqdm | None = None
        self._start = 0.0
        self._samples = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._start, self._samples = time.perf_counter(), 0
        if self.progress:
            self._bar = tqdm(total=engine.state.epoch_length, desc=f"epoch {engine.state.epoch}/{engine.state.max_epochs}", unit="it", leave=True, dynamic_ncols=True)

    def iteration_completed(self, engine: Engine) -> None:
        self._samples += self.batch_size * self.world_size
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        engine.state.samples_per_second = self._samples / elapsed
        engine.state.learning_rate = float(engine.optimizer.param_groups[0]["lr"])
        if self._bar is not None:
            output = engine.state.output
            first = output[0] if isinstance(output, list) and output else output  # decollated: the loss is on every item
            loss = first.get("loss") if isinstance(first, dict) else None
            postfix = {"samples/s": f"{engine.state.samples_per_second:.1f}", "lr": f"{engine.state.learning_rate:.2e}"}
            if loss is not None:
                postfix = {"loss": f"{float(loss.detach() if isinstance(loss, torch.Tensor) else loss):.4f}", **postfix}
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)

    def epoch_completed(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class PredictionOverlay:
    """After each validation, write the overlay of the first validation case to TensorBoard.

    The image is the report's compact overlay (:func:`pipeline.evaluation.report.overlay_figure`): the
    prediction filled in the task's label colours over FLAIR (or its first channel), and below it the error map (true
    positives, false positives, false negatives, wrong class), on each plane's slice with the
    most tumour.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        tag: the image tag.
        global_step_engine: the engine whose epoch is the step (the trainer); default the evaluator's.
        task: the image's channels and the labels' classes and colours (``None``: BraTS glioma).
    """

    def __init__(self, summary_writer: Any, tag: str = "val/overlay", global_step_engine: Engine | None = None, task: TaskSpec = None) -> None:
        self.writer = summary_writer
        self.tag = tag
        self.global_step_engine = global_step_engine
        self.task = resolve_task(task)
        self._image: np.ndarray | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self.capture)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    @staticmethod
    def internal_labels(masks: np.ndarray, task: Task = DEFAULT_TASK) -> np.ndarray:
        """Internal labels ``(Z, X, Y)`` of structure masks ``(S, Z, X, Y)`` in the task's order (what the evaluator scores; BraTS: NEC, ED, ET, WT, TC).

        A voxel is of class ``c`` when it lies in every structure holding ``c`` and in no other.
        """
        inside = np.asarray(masks) > 0
        labels = np.zeros(inside.shape[1:], dtype=np.uint8)
        for name in task.classes:
            member = np.ones(inside.shape[1:], dtype=bool)
            for index, classes in enumerate(task.structures.values()):
                member &= inside[index] if name in classes else ~inside[index]
            labels[member] = task.class_value(name)
        return labels

    def capture(self, engine: Engine) -> None:

        output = engine.state.output
        item = output[0] if isinstance(output, list) else output
        image = torch.as_tensor(item["image"]).float().cpu().numpy()  # (Z, C, X, Y)
        pred, label = (self.internal_labels(torch.as_tensor(item[k]).cpu().numpy(), self.task) for k in ("pred", "label"))
        # Square voxels, as the cache grid keeps the source spacing (1 mm for BraTS).
        self._image = figure_rgb(overlay_figure(image, pred, label, spacing_xyz=(1.0, 1.0, 1.0), title=str(item.get("case_id", "")), task=self.task))

    def write(self, engine: Engine) -> None:
        if self._image is None or self.writer is None:
            return
        step = (self.global_step_engine or engine).state.epoch
        self.writer.add_image(self.tag, np.ascontiguousarray(self._image), step, dataformats="HWC")
        self.writer.flush()
        self._image = None
