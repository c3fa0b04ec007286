"""What every stage uses: errors, atomic file writes, geometry, checkpoints, and the distributed helpers (ranks, shards)."""

__all__: list[str] = []
