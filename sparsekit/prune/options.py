"""How a run setting describes itself: its help text and how ``sparsekit prune`` offers it.

Every field of PruneConfig (config.py) and of the method option groups (abp.py, cap.py, lpaf.py,
structured.py) is declared with :func:`option`. The help is written once, there; the CLI builds the
``prune`` command's options from this metadata (sparsekit/cli_options.py).
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

#: ``--help`` sections (typer's rich_help_panel). A setting without one is listed under "Options".
PRUNING = "Pruning"
DATA = "Data and model"
TRAIN = "Training"
METHODS = "Method options (abp, CAP, lpaf, smp-struct)"
TASK_TYPES = "Task types (token classification, question answering)"


def option(default: Any, help: str, *, panel: str | None = None, flags: tuple[str, ...] = (),
           path: bool = False, choices: tuple[str, ...] | None = None, cli: bool = True) -> Any:
    """A dataclass field with ``default`` whose metadata says what it means and how the CLI offers it.

    help: one line, shown by ``--help``. panel: its ``--help`` section (None: "Options"). flags: the option's
    names when they are not just ``--field-name`` (``("--output-dir", "-o")``, ``("--resume",)`` for a flag
    without a ``--no-`` form, ``("--progress/--no-progress",)``). path: the CLI reads a path (the field
    stores it as a str). choices: the allowed values, listed by ``--help``. cli: False for a setting only
    the Python API sets (no option).
    """
    return field(default=default, metadata={"help": help, "panel": panel, "flags": flags, "path": path,
                                            "choices": choices, "cli": cli})
