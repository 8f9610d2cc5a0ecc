"""Checking a ``POST /predict`` body: size, JSON, shape and types, with a reason a client can act on."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may contain: body bytes, number of texts, characters per text (per side of a pair)."""

    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_text_chars: int = 2000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_json(self) -> dict:
        return asdict(self)


class RequestError(Exception):
    """A bad request: ``status`` (4xx) and ``detail``, the reason sent back to the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _type_name(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def parse_texts(body: bytes, limits: Limits) -> tuple[list[str | tuple[str, str]], str]:
    """Parse ``{"texts": [...]}`` into (texts, kind): strings (kind ``"single"``) or ``(a, b)`` pairs (``"pair"``).

    Raises RequestError: 400 for a body that is not JSON, 413 for too many or too long texts, 422 for the
    wrong shape or types (not an object, a missing or unknown field, not a list, an empty list, an item that
    is neither a string nor a pair of strings, single texts mixed with pairs, a text that is not valid
    Unicode, i.e. holds a lone surrogate escape such as ``"\\ud800"``).
    """
    if not body.strip():
        raise RequestError(400, 'empty body; send JSON like {"texts": ["a text", ...]}')
    try:
        # Numbers are never valid here, only reported: float() takes any size, where int() refuses over
        # 4300 digits (a ValueError that is no fault of the JSON).
        data = json.loads(body, parse_int=float)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(422, f'the body must be a JSON object {{"texts": [...]}}, got {_type_name(data)}')
    if "texts" not in data:
        raise RequestError(422, 'missing field "texts" (a list of strings, or of [text_a, text_b] pairs)')
    unknown = sorted(set(data) - {"texts"})
    if unknown:
        raise RequestError(422, f'unknown field(s) {", ".join(map(repr, unknown))}; the body takes only "texts"')
    texts = data["texts"]
    if isinstance(texts, str):
        raise RequestError(422, '"texts" must be a list; wrap a single text in a list: {"texts": ["..."]}')
    if not isinstance(texts, list):
        raise RequestError(422, f'"texts" must be a list of strings or [text_a, text_b] pairs, '
                                f'got {_type_name(texts)}')
    if not texts:
        raise RequestError(422, '"texts" is empty; send at least one text')
    if len(texts) > limits.max_texts:
        raise RequestError(413, f'"texts" has {len(texts)} items; the limit is {limits.max_texts} per request')
    out: list[str | tuple[str, str]] = []
    for i, item in enumerate(texts):
        if isinstance(item, str):
            _check_text(item, f"texts[{i}]", limits)
            out.append(item)
        elif isinstance(item, list):
            if len(item) != 2:
                raise RequestError(422, f"texts[{i}] is an array of {len(item)} items; a pair has exactly 2")
            for j, side in enumerate(item):
                if not isinstance(side, str):
                    raise RequestError(422, f"texts[{i}][{j}] must be a string, got {_type_name(side)}")
                _check_text(side, f"texts[{i}][{j}]", limits)
            out.append((item[0], item[1]))
        else:
            raise RequestError(422, f"texts[{i}] must be a string or a [text_a, text_b] pair of strings, "
                                    f"got {_type_name(item)}")
    kinds = {isinstance(t, str) for t in out}
    if len(kinds) > 1:
        raise RequestError(422, '"texts" mixes single texts and pairs; send one kind per request')
    return out, "single" if kinds == {True} else "pair"


def _check_text(text: str, where: str, limits: Limits) -> None:
    """413 for a text over the character limit, 422 for one that cannot be encoded as UTF-8."""
    if len(text) > limits.max_text_chars:
        raise RequestError(413, f"{where} has {len(text)} characters; the limit is {limits.max_text_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise RequestError(422, f"{where} is not valid Unicode: a lone surrogate \\u{ord(bad):04x} at character "
                                f"{exc.start}; send UTF-8 text (a surrogate escape must be part of a pair)") from None
