"""IOB tags: parsing, IOB1 → IOB2 conversion, scheme detection and entity spans.

A tag is ``"O"`` or ``"B-TYPE"`` / ``"I-TYPE"`` (TYPE non-empty). In IOB2 every entity starts with ``B-``; in IOB1
an entity starts with ``I-`` and ``B-`` only marks the start of an entity that directly follows another of the
same type. Converting IOB1 to IOB2 turns every ``I-X`` that does not continue an ``X`` entity (at the start of a
sentence, after ``O``, or after a tag of another type) into ``B-X``; on valid IOB2 tags it changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

SCHEMES = ("auto", "iob1", "iob2")


def split_tag(tag: str) -> tuple[str, str | None]:
    """``("O", None)``, ``("B", TYPE)`` or ``("I", TYPE)``; ValueError for anything else (BIOES, bare types)."""
    if tag == "O":
        return "O", None
    if isinstance(tag, str) and len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"{tag!r} is not an IOB tag (O, B-TYPE or I-TYPE)")


def is_iob_tag(tag: object) -> bool:
    """True for ``"O"``, ``"B-TYPE"`` and ``"I-TYPE"``."""
    return tag == "O" or (isinstance(tag, str) and len(tag) > 2 and tag[0] in "BI" and tag[1] == "-")


def _continues(previous: str | None, prefix: str, kind: str | None) -> bool:
    """True when an ``I-kind`` tag after ``previous`` continues the same entity."""
    return prefix == "I" and previous is not None and previous != "O" and previous[2:] == kind


def entity_starting_i_tags(tags: Sequence[str]) -> list[int]:
    """Positions of the ``I-X`` tags that start an entity (first tag, after ``O``, or after another type):
    normal in IOB1, invalid in IOB2."""
    starts, previous = [], None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix == "I" and not _continues(previous, prefix, kind):
            starts.append(i)
        previous = tag
    return starts


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """IOB1 tags as IOB2: each ``I-X`` that starts an entity becomes ``B-X`` (see entity_starting_i_tags)."""
    out = list(tags)
    for i in entity_starting_i_tags(tags):
        out[i] = "B-" + tags[i][2:]
    return tuple(out)


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """"iob1" when some ``I-X`` tag starts an entity (at a sentence start, after ``O`` or after another type),
    else "iob2". IOB2 data with such invalid tags is detected as IOB1 too; converting it keeps every ``B-`` tag
    and makes the stray ``I-X`` tags entity starts, as conlleval reads them."""
    return "iob1" if any(entity_starting_i_tags(tags) for tags in sentences) else "iob2"


def strict_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of IOB2 ``tags`` in strict mode (seqeval ``mode="strict", scheme=IOB2``): a ``B-X`` followed
    by the longest run of ``I-X``; an ``I-X`` that does not continue an ``X`` entity is no entity (and does not
    extend one). Returns ``(type, start, end)`` word spans, end exclusive."""
    entities, i = [], 0
    while i < len(tags):
        prefix, kind = split_tag(tags[i])
        if prefix != "B":
            i += 1
            continue
        end = i + 1
        while end < len(tags) and tags[end] == "I-" + kind:
            end += 1
        entities.append((kind, i, end))
        i = end
    return entities


def lenient_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities as a prediction pipeline groups them: ``B-X`` starts an entity, ``I-X`` continues an ``X``
    entity or, when it cannot, starts one (Hugging Face's token-classification grouping). ``(type, start,
    end)`` word spans, end exclusive."""
    entities: list[list] = []
    previous = None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix == "I" and _continues(previous, prefix, kind) and entities and entities[-1][2] == i:
            entities[-1][2] = i + 1
        elif prefix != "O":
            entities.append([kind, i, i + 1])
        previous = tag
    return [tuple(e) for e in entities]
