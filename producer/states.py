"""The final state of a task or flow run, for `return_state=True` and the hooks.

Only the parts a Prefect user touches: `is_completed()`, `is_failed()`,
`result()`, `type`, `name`, `message`. A state never holds a Prefect server's
bookkeeping (ids, timestamps); Assetlog has no server.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

R = TypeVar("R")

COMPLETED = "COMPLETED"
FAILED = "FAILED"
CRASHED = "CRASHED"
RUNNING = "RUNNING"


class State(Generic[R]):
    """Completed (with the run's result) or Failed/Crashed (with its exception)."""

    __slots__ = ("data", "message", "name", "type")

    def __init__(self, type: str, name: str, data: Any, message: str | None = None) -> None:
        self.type = type
        self.name = name
        self.data = data
        self.message = message

    def is_completed(self) -> bool:
        return self.type == COMPLETED

    def is_failed(self) -> bool:
        return self.type == FAILED

    def is_crashed(self) -> bool:
        return self.type == CRASHED

    def is_running(self) -> bool:
        return self.type == RUNNING

    def is_final(self) -> bool:
        return self.type != RUNNING

    def result(self, raise_on_failure: bool = True) -> R:
        """The run's return value; a failed run's exception is raised (or returned with
        `raise_on_failure=False`), as in Prefect."""
        if isinstance(self.data, BaseException):
            if raise_on_failure:
                raise self.data
            return self.data  # type: ignore[return-value]
        return self.data  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"{self.name}(message={self.message!r}, type={self.type})"


def running() -> State[Any]:
    return State(RUNNING, "Running", None)


def completed(result: Any, name: str = "Completed") -> State[Any]:
    return State(COMPLETED, name, result)


def failed(error: BaseException, *, kind: str = "task") -> State[Any]:
    """Prefect's Failed state (named TimedOut for a timeout), or Crashed for a BaseException."""
    if not isinstance(error, Exception):
        return State(CRASHED, "Crashed", error, f"Execution was interrupted: {error!r}")
    if isinstance(error, TimeoutError):
        return State(FAILED, "TimedOut", error, str(error))
    return State(FAILED, "Failed", error, f"{kind.capitalize()} run encountered an exception: {error!r}")
