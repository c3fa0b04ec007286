"""Rows and cells of the Markdown tables in the project's pages, for tests that check them against recorded results."""

from __future__ import annotations

from pathlib import Path


def table_cells(row: str) -> list[str]:
    """The stripped cells of one table row ``| a | b |``."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def table_rows(page: Path | str, first_cell: str = "") -> list[str]:
    """The table rows of a page (a path or its text) whose first cell starts with ``first_cell``."""
    text = page.read_text() if isinstance(page, Path) else page
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]
