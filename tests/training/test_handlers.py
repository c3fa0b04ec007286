"""Training handlers: the TensorBoard overlay is the evaluation report's overlay."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pipeline.tasks.labels import ED, ET, NEC, SCORED_STRUCTURES
from pipeline.training.handlers import PredictionOverlay
from pipeline.visualize.overlays import figure_rgb, overlay_figure


def _structure_masks(labels: np.ndarray) -> torch.Tensor:
    """What the evaluator's StructureMasks gives: one mask per scored structure (NEC, ED, ET, WT, TC)."""
    masks = {"NEC": labels == NEC, "ED": labels == ED, "ET": labels == ET, "WT": labels > 0, "TC": (labels == NEC) | (labels == ET)}
    return torch.as_tensor(np.stack([masks[name] for name in SCORED_STRUCTURES])).to(torch.uint8)


class _Writer:
    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, int, str]] = []

    def add_image(self, tag: str, image: np.ndarray, step: int, dataformats: str) -> None:
        self.images.append((tag, image, step, dataformats))

    def flush(self) -> None:
        pass


def test_prediction_overlay_writes_the_report_overlay_of_the_first_case() -> None:
    z, x, y = np.indices((10, 14, 16))
    distance = np.sqrt((z - 5) ** 2 + (x - 7) ** 2 + (y - 8) ** 2)
    truth = np.select([distance < 1.5, distance < 3, distance < 5], [NEC, ET, ED], 0).astype(np.uint8)
    prediction = np.roll(truth, 2, axis=2)
    image = np.stack([(z + channel * x + y).astype(np.float16) for channel in range(4)], axis=1)
    item = {"image": torch.as_tensor(image), "pred": _structure_masks(prediction), "label": _structure_masks(truth), "case_id": "case_7"}
    writer = _Writer()
    overlay = PredictionOverlay(writer, tag="val/overlay")
    engine = SimpleNamespace(state=SimpleNamespace(output=[item], epoch=3))

    overlay.capture(engine)
    overlay.write(engine)

    (tag, written, step, dataformats) = writer.images[0]
    assert (tag, step, dataformats) == ("val/overlay", 3, "HWC")
    expected = figure_rgb(overlay_figure(image.astype(np.float32), prediction, truth, (1.0, 1.0, 1.0), title="case_7"))
    assert np.array_equal(written, expected)
    overlay.write(engine)  # nothing new captured: nothing written
    assert len(writer.images) == 1


def test_structure_masks_decode_back_to_the_internal_labels() -> None:
    labels = np.array([[[0, NEC, ED, ET]]], dtype=np.uint8)
    assert np.array_equal(PredictionOverlay.internal_labels(_structure_masks(labels).numpy()), labels)
