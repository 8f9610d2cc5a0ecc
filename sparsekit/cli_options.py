"""Typer options generated from the field metadata of a settings dataclass (sparsekit/prune/options.py).

``sparsekit prune`` offers one option per PruneConfig field declared for the CLI: its name, type, default,
help and ``--help`` panel come from the field, so a setting is described in one place. Typer reads a
command's options from the function's signature, so :func:`config_command` builds that signature.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import MISSING, Field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Union

import typer
from rich.markup import escape


@functools.cache
def _choices_enum(name: str, choices: tuple[str, ...]) -> type[Enum]:
    """A str Enum whose values are ``choices`` (typer lists an Enum's values and refuses others)."""
    return Enum(name, {choice: choice for choice in choices}, type=str)


def _cli_type(f: Field, hint: Any) -> Any:
    """What typer parses for field ``f`` whose resolved annotation is ``hint``.

    A path field is read as a Path, a field with choices as their Enum, and a union of several types
    (``float | str``) as text, which the config's validate() parses.
    """
    meta = f.metadata
    union = typing.get_origin(hint) in (Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if meta["choices"]:
        base = _choices_enum(f.name.title(), meta["choices"])
    elif meta["path"]:
        base = Path
    else:
        base = args[0] if len(args) == 1 else str
    return Optional[base] if union and type(None) in typing.get_args(hint) else base


def config_option(config_cls: type, name: str, default: Any = MISSING) -> Any:
    """The typer.Option of ``config_cls``'s field ``name`` (another ``default`` where a command has its own)."""
    f = next(f for f in fields(config_cls) if f.name == name)
    meta = f.metadata
    value = f.default if default is MISSING else default
    if value is not None and meta["choices"]:
        value = _choices_enum(f.name.title(), meta["choices"])(value)
    elif value is not None and meta["path"]:
        value = Path(value)
    # escape: typer renders help as rich markup, which would swallow "[method default]" as a style tag.
    return typer.Option(value, *meta["flags"], help=escape(meta["help"]), rich_help_panel=meta["panel"])


def _config_value(value: Any) -> Any:
    """A parsed option as the config stores it (an Enum's value, a path as str)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def config_command(config_cls: type) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorator: ``fn(config)`` becomes a typer command with one option per CLI field of ``config_cls``.

    The options appear in field order; the values are gathered into one ``config_cls`` instance for ``fn``.
    """
    hints = typing.get_type_hints(config_cls)
    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=config_option(config_cls, f.name),
                                annotation=_cli_type(f, hints[f.name]))
              for f in fields(config_cls) if f.metadata.get("cli")]

    def decorate(fn: Callable[[Any], Any]) -> Callable[..., Any]:
        def command(**values: Any) -> Any:
            return fn(config_cls(**{name: _config_value(value) for name, value in values.items()}))

        command.__name__, command.__qualname__ = fn.__name__, fn.__qualname__
        command.__module__, command.__doc__ = fn.__module__, fn.__doc__
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
