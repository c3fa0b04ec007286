"""Errors that the command line reports as one clear line instead of a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from os import PathLike

__all__ = ["ConfigError", "InputError", "PipelineError", "unwrap_pipeline_errors"]


class PipelineError(Exception):
    """A problem with the user's input or environment, reported as ``<where>: <what>``.

    Args:
        where: the file, folder or option the problem is about.
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, where: str | PathLike[str], problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class InputError(PipelineError):
    """Bad input data: a missing, unreadable or inconsistent file."""


class ConfigError(PipelineError):
    """A bad option, data list, configuration or checkpoint."""


@contextlib.contextmanager
def unwrap_pipeline_errors() -> Iterator[None]:
    """Re-raise the :class:`PipelineError` that MONAI's config parsing wrapped in its own error types."""
    try:
        yield
    except PipelineError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        cause: BaseException = err
        while cause.__cause__ is not None and not isinstance(cause, PipelineError):
            cause = cause.__cause__
        if isinstance(cause, PipelineError):
            raise cause from err
        raise
