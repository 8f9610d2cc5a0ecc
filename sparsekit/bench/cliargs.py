"""Sweep options that take several values after one flag (``--batch 1 8 --seq 128``) on a typer command.

Click options take one value per flag (``--batch 1 --batch 8``). :class:`MultiValueCommand` rewrites the
arguments before click parses them: the numbers that follow a sweep flag become repeated flags. The first
value is always left to click (so ``--batch x`` still gets click's "not a valid integer"); further values
are taken while they look like numbers, so a positional argument after the sweep is never swallowed.
The original arguments are kept in ``ctx.meta["raw_args"]`` for the result file's ``command``.
"""
from __future__ import annotations

import re

from typer.core import TyperCommand

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def expand_multi_values(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``["--batch", "1", "8"]`` -> ``["--batch", "1", "--batch", "8"]`` for every flag in ``flags``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        out.append(arg)
        i += 1
        if arg == "--":
            out += args[i:]
            break
        flag = arg.split("=", 1)[0]
        if flag not in flags:
            continue
        if "=" not in arg:  # the first value belongs to the flag whatever it is
            if i < len(args):
                out.append(args[i])
                i += 1
        while i < len(args) and _NUMBER.match(args[i]):
            out += [flag, args[i]]
            i += 1
    return out


class MultiValueCommand(TyperCommand):
    """A typer command whose ``multi_value_flags`` accept several values after one flag."""

    multi_value_flags: tuple[str, ...] = ("--batch", "--seq", "--threads", "--sparsity")

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return super().parse_args(ctx, expand_multi_values(list(args), self.multi_value_flags))
