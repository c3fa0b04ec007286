"""The package as a whole: every public module declares its interface in ``__all__``, and the names exist."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def public_modules() -> list[str]:
    """Dotted names of every module of the package (``__main__`` excluded)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module_name", public_modules())
def test_every_module_declares_existing_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, "__all__", None), list), f"{module_name} has no __all__"
    is_package = hasattr(module, "__path__")
    assert module.__all__ or is_package, f"{module_name}.__all__ is empty"  # a stage package may only document its modules
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ repeats a name"
    for name in module.__all__:
        assert not name.startswith("_") or name == "__version__", f"{module_name}.__all__ exports private {name}"
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which the module does not define"
