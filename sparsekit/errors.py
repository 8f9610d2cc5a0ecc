"""sparsekit's error base class, and the one way an error becomes a message for a person.

Errors whose message already says what to do (a model sparsekit cannot use, a corrupt artifact, a bad
result file) derive from SparsekitError *and* from the built-in class callers already catch
(``ValueError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class SparsekitError(Exception):
    """An error sparsekit raises on purpose; its message names the problem and what to do about it."""


class ModelError(SparsekitError, ValueError):
    """A model name, path or architecture sparsekit cannot use; the message says what to do."""


def format_error(exc: BaseException, *, with_type: bool = False, first_line: bool = False,
                 max_chars: int | None = None) -> str:
    """The message of ``exc`` for a person: the CLI's ``error: ...`` line, a server response, a result file.

    The message is ``str(exc)`` without surrounding whitespace. with_type: prefix the exception class,
    ``"RuntimeError: message"`` (just ``"RuntimeError"`` when the message is empty). first_line: keep only
    the message's first line. max_chars: cut the result to this many characters, the last three ``...``.
    """
    text = str(exc).strip()
    if first_line:
        text = text.splitlines()[0] if text else ""
    if with_type:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars - 3] + "..."
    return text
