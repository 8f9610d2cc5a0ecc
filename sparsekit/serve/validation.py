"""Checking a ``POST /predict`` body: size, JSON, shape and types, with a reason a client can act on.

One parser per task type: ``parse_texts`` (sequence classification: ``{"texts": [...]}`` of strings or pairs),
``parse_token_inputs`` (token classification: ``{"texts": [...]}`` of strings or word lists) and
``parse_qa_inputs`` (question answering: ``{"inputs": [{"question", "context"}, ...]}``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may contain: body bytes, number of texts, characters per text (per side of a pair, per
    QA question) and per QA context."""

    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_text_chars: int = 2000
    max_context_chars: int = 20000

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


def _load_object(body: bytes, field: str, example: str) -> dict:
    """The JSON object of ``body`` with exactly the one field ``field``; RequestError 400 / 422 otherwise."""
    if not body.strip():
        raise RequestError(400, f"empty body; send JSON like {example}")
    try:
        # Numbers are never valid here, only reported: float() takes any size, where int() refuses over
        # 4300 digits (a ValueError that is no fault of the JSON).
        data = json.loads(body, parse_int=float)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object {example}, got {_type_name(data)}")
    if field not in data:
        raise RequestError(422, f'missing field "{field}"; send JSON like {example}')
    unknown = sorted(set(data) - {field})
    if unknown:
        raise RequestError(422, f'unknown field(s) {", ".join(map(repr, unknown))}; the body takes only "{field}"')
    return data


def _items(data: dict, field: str, limits: Limits) -> list:
    """The non-empty list ``data[field]`` of at most ``limits.max_texts`` items (413 beyond, 422 if no list)."""
    items = data[field]
    if not isinstance(items, list):
        raise RequestError(422, f'"{field}" must be a list, got {_type_name(items)}')
    if not items:
        raise RequestError(422, f'"{field}" is empty; send at least one item')
    if len(items) > limits.max_texts:
        raise RequestError(413, f'"{field}" has {len(items)} items; the limit is {limits.max_texts} per request')
    return items


def parse_token_inputs(body: bytes, limits: Limits) -> tuple[list[str | list[str]], str]:
    """Parse a token-classification body ``{"texts": [...]}`` into (inputs, kind): texts (kind ``"single"``) or
    word lists (kind ``"words"``, each a non-empty list of strings; entities' offsets are into the words joined
    by spaces). One kind per request.

    RequestError: 400 for a body that is not JSON, 413 for too many inputs or a text (words joined) over
    ``max_text_chars``, 422 for the wrong shape or types.
    """
    data = _load_object(body, "texts", '{"texts": ["a text", ...]} or {"texts": [["some", "words"], ...]}')
    out: list[str | list[str]] = []
    for i, item in enumerate(_items(data, "texts", limits)):
        if isinstance(item, str):
            _check_text(item, f"texts[{i}]", limits)
            out.append(item)
        elif isinstance(item, list) and item and all(isinstance(w, str) for w in item):
            _check_text(" ".join(item), f"texts[{i}] (its words joined by spaces)", limits)
            out.append(list(item))
        else:
            raise RequestError(422, f"texts[{i}] must be a string or a non-empty list of words (strings), "
                                    f"got {_type_name(item)}")
    kinds = {isinstance(t, str) for t in out}
    if len(kinds) > 1:
        raise RequestError(422, '"texts" mixes texts and word lists; send one kind per request')
    return out, "single" if kinds == {True} else "words"


def parse_qa_inputs(body: bytes, limits: Limits) -> tuple[list[tuple[str, str]], str]:
    """Parse a question-answering body ``{"inputs": [{"question": ..., "context": ...}, ...]}`` into
    ``(question, context)`` pairs (kind ``"pair"``).

    RequestError: 400 for a body that is not JSON, 413 for too many items, 422 for the wrong shape or types, an
    empty question or context, a question over ``max_text_chars`` or a context over ``max_context_chars``
    characters (the message gives the limit).
    """
    data = _load_object(body, "inputs", '{"inputs": [{"question": "...", "context": "..."}, ...]}')
    out: list[tuple[str, str]] = []
    for i, item in enumerate(_items(data, "inputs", limits)):
        if not isinstance(item, dict):
            raise RequestError(422, f'inputs[{i}] must be an object {{"question": ..., "context": ...}}, '
                                    f"got {_type_name(item)}")
        if set(item) != {"question", "context"}:
            raise RequestError(422, f'inputs[{i}] must have exactly the fields "question" and "context", got '
                                    f'{", ".join(map(repr, sorted(item))) or "none"}')
        for key, limit in (("question", limits.max_text_chars), ("context", limits.max_context_chars)):
            value = item[key]
            if not isinstance(value, str):
                raise RequestError(422, f"inputs[{i}].{key} must be a string, got {_type_name(value)}")
            if not value.strip():
                raise RequestError(422, f"inputs[{i}].{key} is empty")
            if len(value) > limit:
                raise RequestError(422, f"inputs[{i}].{key} is too long: {len(value)} characters; the limit is "
                                        f"{limit} (max_{'text' if key == 'question' else 'context'}_chars)")
            _check_text(value, f"inputs[{i}].{key}", limits, max_chars=limit)
        out.append((item["question"], item["context"]))
    return out, "pair"


def parse_texts(body: bytes, limits: Limits) -> tuple[list[str | tuple[str, str]], str]:
    """Parse ``{"texts": [...]}`` into (texts, kind): strings (kind ``"single"``) or ``(a, b)`` pairs (``"pair"``).

    Raises RequestError: 400 for a body that is not JSON, 413 for too many or too long texts, 422 for the
    wrong shape or types (not an object, a missing or unknown field, not a list, an empty list, an item that
    is neither a string nor a pair of strings, single texts mixed with pairs, a text that is not valid
    Unicode, i.e. holds a lone surrogate escape such as ``"\\ud800"``).
    """
    data = _load_object(body, "texts", '{"texts": ["a text", ...]} (or [text_a, text_b] pairs)')
    if isinstance(data["texts"], str):
        raise RequestError(422, '"texts" must be a list; wrap a single text in a list: {"texts": ["..."]}')
    texts = _items(data, "texts", limits)
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


def _check_text(text: str, where: str, limits: Limits, max_chars: int | None = None) -> None:
    """413 for a text over the character limit (``max_chars``, default ``limits.max_text_chars``), 422 for one
    that cannot be encoded as UTF-8."""
    max_chars = limits.max_text_chars if max_chars is None else max_chars
    if len(text) > max_chars:
        raise RequestError(413, f"{where} has {len(text)} characters; the limit is {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise RequestError(422, f"{where} is not valid Unicode: a lone surrogate \\u{ord(bad):04x} at character "
                                f"{exc.start}; send UTF-8 text (a surrogate escape must be part of a pair)") from None
