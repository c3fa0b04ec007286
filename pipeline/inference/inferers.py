"""Whole-volume inference over a cached or prepared volume: batched slices (2D, 2.5D) or sliding windows (3D).

A volume arrives in the cache layout ``(Z, C, X, Y)``. Slice models see batches of
``sw_batch_size`` axial slices per forward pass (2.5D stacks built by
:func:`pipeline.transforms.context.stack_context`, the same code that builds training samples); 3D models run
MONAI's :class:`~monai.inferers.SlidingWindowInferer` with Gaussian blending. Optional test-time
augmentation averages the probabilities of mirrored passes. The result is always a float32
probability tensor ``(K, Z, X, Y)`` on the CPU.

An :class:`EnsembleInferer` averages the probabilities of several networks, each run by its own
:class:`VolumeInferer` (with its own mirrored passes), before anything is decoded. Both return,
on request, the mean over their passes of each pass's normalised entropy, from which
:mod:`pipeline.inference.uncertainty` derives the members' disagreement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import DivisiblePad
from monai.utils import convert_to_tensor

from pipeline.core.errors import ConfigError
from pipeline.inference.uncertainty import normalised_entropy
from pipeline.networks import check_mode, spatial_divisor
from pipeline.tasks.task import Task, TaskSpec, model_task
from pipeline.transforms.context import stack_context

__all__ = ["EngineInferer", "EnsembleInferer", "VolumeInferer"]


#: Stitch 3D sliding-window outputs on the CPU above this many output elements (about 1 GiB of float32).
CPU_STITCH_ELEMENTS = 2**28


class VolumeInferer:
    """Run a segmentation network over a whole volume and return class or region probabilities.

    Args:
        mode: ``2d``, ``2.5d`` or ``3d``.
        context: slices on each side of the centre slice (2.5D).
        output_mode: ``softmax`` (probabilities of background and the task's classes; BraTS:
            NEC, ED, ET) or ``regions`` (sigmoid probabilities of its regions; BraTS: TC, WT, ET);
            ``None``: the task's target.
        roi_size: 3D: sliding-window size in (X, Y, Z) (``None``: the whole padded volume in one
            window). 2D/2.5D: an in-plane window (X, Y) for slices larger than the network
            should see at once (``None``: whole slices).
        sw_batch_size: slices (2D/2.5D) or windows (3D) per forward pass.
        overlap: sliding-window overlap (3D, or 2D with ``roi_size``).
        tta: average over mirrored passes (in-plane axes; also Z in 3D).
        divisor: the multiple the spatial size must have (``None``: read from the network,
            see :func:`pipeline.networks.spatial_divisor`).
        padding: 2.5D border handling, ``replicate`` or ``reflect`` (as in training).
        task: what the network predicts (:func:`pipeline.tasks.task.resolve_task`; ``None``: BraTS glioma).
    """

    def __init__(
        self,
        mode: str,
        context: int = 2,
        output_mode: str | None = None,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 16,
        overlap: float = 0.5,
        tta: bool = False,
        divisor: int | None = None,
        padding: str = "replicate",
        task: TaskSpec = None,
    ) -> None:
        check_mode(mode, output_mode or "softmax")
        expected = 3 if mode == "3d" else 2
        if roi_size is not None and len(roi_size) != expected:
            raise ConfigError("roi_size", f"mode {mode} needs {expected} roi sizes, got {list(roi_size)}")
        if sw_batch_size < 1:
            raise ConfigError("sw_batch_size", f"must be >= 1, got {sw_batch_size}")
        self.mode = mode
        self.context = int(context)
        self.task = model_task(task, output_mode)
        self.output_mode = self.task.target
        self.roi_size = tuple(int(r) for r in roi_size) if roi_size is not None else None
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.tta = bool(tta)
        self.divisor = divisor
        self.padding = padding

    def flips(self) -> list[tuple[int, ...]]:
        """Spatial dimensions (of a batch tensor) mirrored in each pass; ``()`` is the plain pass."""
        axes = (2, 3, 4) if self.mode == "3d" else (2, 3)
        if not self.tta:
            return [()]
        return [combo for size in range(len(axes) + 1) for combo in itertools.combinations(axes, size)]

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes, or a sigmoid per region (channel dimension 1)."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.output_mode == "regions" else torch.softmax(logits, dim=1)

    @property
    def passes(self) -> int:
        """Forward passes averaged per volume (mirrored passes with TTA, else 1)."""
        return len(self.flips())

    def __call__(self, network: torch.nn.Module, image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """Probabilities ``(K, Z, X, Y)`` float32 on the CPU for a volume ``(Z, C, X, Y)``."""
        return self.scores(network, image, device)

    def with_pass_entropy(
        self, network: torch.nn.Module, image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The probabilities, and the mean over the passes of each pass's normalised entropy ``(Z, X, Y)``."""
        scores = self.scores(network, image, device, pass_entropy=True)
        return scores[:-1], scores[-1]

    @torch.no_grad()
    def scores(
        self, network: torch.nn.Module, image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu", pass_entropy: bool = False
    ) -> torch.Tensor:
        """The probabilities ``(K, Z, X, Y)``; with ``pass_entropy`` the mean pass entropy follows as channel ``K``."""
        if image.ndim != 4:
            raise ConfigError("image", f"expected a (Z, C, X, Y) volume, got shape {tuple(image.shape)}")
        device = torch.device(device)
        divisor = self.divisor or spatial_divisor(network)
        if self.mode == "3d":
            return self._infer_volume(network, image, device, divisor, pass_entropy)
        return self._infer_slices(network, image, device, divisor, pass_entropy)

    def _forward_tta(self, predict: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, pass_entropy: bool = False) -> torch.Tensor:
        """Average the activated outputs of the mirrored passes (each mirrored back); optionally append their mean entropy as a channel."""
        total: torch.Tensor | None = None
        entropy: torch.Tensor | None = None
        flips = self.flips()
        for dims in flips:
            inputs = torch.flip(batch, dims) if dims else batch
            probabilities = self.activate(predict(inputs))
            probabilities = torch.flip(probabilities, dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
            if pass_entropy:
                pass_value = normalised_entropy(probabilities, self.output_mode, dim=1)
                entropy = pass_value if entropy is None else entropy + pass_value
        assert total is not None
        if entropy is None:
            return total / len(flips)
        return torch.cat([total / len(flips), (entropy / len(flips)).unsqueeze(1)], dim=1)

    def _infer_slices(
        self, network: torch.nn.Module, image: np.ndarray | torch.Tensor, device: torch.device, divisor: int, pass_entropy: bool = False
    ) -> torch.Tensor:
        num_slices, _, size_x, size_y = image.shape
        pad = DivisiblePad(k=divisor, method="end")
        window = (
            SlidingWindowInferer(roi_size=self.roi_size, sw_batch_size=self.sw_batch_size, overlap=self.overlap, mode="gaussian")
            if self.roi_size is not None
            else None
        )

        def predict(batch: torch.Tensor) -> torch.Tensor:
            # padded at the end of X and Y and cropped back, after any mirroring, so a mirrored pass sees a mirrored volume
            n, channels = batch.shape[:2]
            padded = convert_to_tensor(pad(batch.reshape(n * channels, size_x, size_y)), track_meta=False)
            padded = padded.reshape(n, channels, *padded.shape[1:])
            logits = window(padded, network) if window is not None else network(padded)
            return logits[:, :, :size_x, :size_y]

        outputs = []
        # One forward pass per chunk of sw_batch_size slices: SliceInferer would call the network once per slice.
        for start in range(0, num_slices, self.sw_batch_size):
            indices = np.arange(start, min(start + self.sw_batch_size, num_slices))
            if self.mode == "2.5d":
                batch = stack_context(image, indices, self.context, self.padding)
            else:
                batch = image[start : indices[-1] + 1]
            batch = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch).to(device=device, dtype=torch.float32)
            probabilities = self._forward_tta(predict, batch, pass_entropy)
            outputs.append(probabilities.cpu())
        # (Z, K, X, Y) -> (K, Z, X, Y)
        return torch.cat(outputs).permute(1, 0, 2, 3).contiguous()

    def _infer_volume(
        self, network: torch.nn.Module, image: np.ndarray | torch.Tensor, device: torch.device, divisor: int, pass_entropy: bool = False
    ) -> torch.Tensor:
        # (Z, C, X, Y) -> (1, C, X, Y, Z)
        volume = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
        volume = volume.permute(1, 2, 3, 0).unsqueeze(0).to(dtype=torch.float32)
        spatial = volume.shape[2:]
        roi = self.roi_size or tuple(math.ceil(s / divisor) * divisor for s in spatial)
        elements = volume.shape[1] * math.prod(spatial)
        stitch_device = torch.device("cpu") if elements > CPU_STITCH_ELEMENTS else device
        window = SlidingWindowInferer(
            roi_size=roi,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            mode="gaussian",
            sw_device=device,
            device=stitch_device,
        )
        volume = volume.to(stitch_device)
        probabilities = self._forward_tta(lambda batch: window(batch, network), volume, pass_entropy)[0]
        # (K, X, Y, Z) -> (K, Z, X, Y)
        return probabilities.permute(0, 3, 1, 2).float().cpu().contiguous()

    def to_labels(self, probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
        """Internal labels ``(Z, X, Y)`` uint8: argmax of softmax outputs, or regions thresholded at 0.5 and decoded (:meth:`pipeline.tasks.task.Task.decode`)."""
        return self.task.decode(np.asarray(probabilities))


def _outputs(task: Task) -> tuple[str, tuple[str, ...]]:
    """What a network's output channels are: its target and their names."""
    return task.target, task.regions if task.target == "regions" else task.classes


class EnsembleInferer:
    """Average the probabilities of several networks, each run by its own inferer, before decoding.

    Each member keeps its own whole-volume inference (mode, context, mirrored passes); the
    ensemble's probabilities are the mean of the members' (each member weighted equally). The
    members must output the same channels (the same ``output_mode``). With one member the result
    is that member's, bit for bit.

    Args:
        members: one :class:`VolumeInferer` (or ensemble) per network.
        names: what each member is called in errors and manifests (its model folder or checkpoint).

    Raises:
        ConfigError: naming the member whose outputs differ from the first member's.
    """

    def __init__(self, members: Sequence[VolumeInferer | EnsembleInferer], names: Sequence[str] | None = None) -> None:
        if not members:
            raise ConfigError("ensemble", "needs at least one model")
        names = [str(name) for name in names] if names is not None else [f"member {index}" for index in range(len(members))]
        if len(names) != len(members):
            raise ConfigError("ensemble", f"{len(members)} members but {len(names)} names")
        first = members[0]
        for member, name in zip(members[1:], names[1:]):
            if _outputs(member.task) != _outputs(first.task):
                raise ConfigError(
                    name,
                    f"outputs {member.output_mode} probabilities but {names[0]} outputs {first.output_mode} "
                    f"({', '.join(_outputs(member.task)[1])} against {', '.join(_outputs(first.task)[1])}); "
                    "the models of an ensemble must predict the same classes",
                )
        self.members = list(members)
        self.names = names

    @property
    def output_mode(self) -> str:
        """The members' common output mode."""
        return self.members[0].output_mode

    @property
    def task(self) -> Task:
        """The members' common task."""
        return self.members[0].task

    @property
    def passes(self) -> int:
        """Forward passes averaged per volume, over all members."""
        return sum(member.passes for member in self.members)

    @property
    def tta(self) -> bool:
        """Whether any member averages mirrored passes; setting it sets every member's."""
        return any(member.tta for member in self.members)

    @tta.setter
    def tta(self, value: bool) -> None:
        for member in self.members:
            member.tta = bool(value)

    def __call__(self, networks: Sequence[torch.nn.Module], image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """The mean of the members' probabilities ``(K, Z, X, Y)``; ``networks`` in the members' order."""
        return self.scores(networks, image, device)

    def with_pass_entropy(
        self, networks: Sequence[torch.nn.Module], image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean probabilities, and the mean over the members of their mean pass entropy."""
        scores = self.scores(networks, image, device, pass_entropy=True)
        return scores[:-1], scores[-1]

    def scores(
        self, networks: Sequence[torch.nn.Module], image: np.ndarray | torch.Tensor, device: str | torch.device = "cpu", pass_entropy: bool = False
    ) -> torch.Tensor:
        """The mean of the members' :meth:`VolumeInferer.scores`."""
        if len(networks) != len(self.members):
            raise ConfigError("ensemble", f"{len(self.members)} inferers but {len(networks)} networks")
        total: torch.Tensor | None = None
        for member, network in zip(self.members, networks):
            scores = member.scores(network, image, device, pass_entropy)
            total = scores if total is None else total + scores
        assert total is not None
        return total / len(self.members)

    def to_labels(self, probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
        """Internal labels ``(Z, X, Y)`` uint8 decoded as the members decode them."""
        return self.members[0].to_labels(probabilities)


class EngineInferer(Inferer):
    """A MONAI :class:`~monai.inferers.Inferer` over batches of whole volumes, for ``SupervisedEvaluator``.

    ``inputs`` is a batch ``(B, Z, C, X, Y)`` (one cached volume per item); the result is the
    probabilities ``(B, K, Z, X, Y)`` on the inputs' device.

    Args:
        volume_inferer: the whole-volume inference to apply to each item.
    """

    def __init__(self, volume_inferer: VolumeInferer) -> None:
        super().__init__()
        self.volume_inferer = volume_inferer

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        results = [self.volume_inferer(network, volume, inputs.device) for volume in inputs]
        return torch.stack(results).to(inputs.device)
