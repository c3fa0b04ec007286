"""Pictures a person reads at a glance: overlays of the prediction, the ground truth and the errors."""

__all__: list[str] = []
