"""Where a built-in task's canonical body copies a value from its docstring (the copy probe's slots).

Most failures of a small model on the built-in tasks have the right shape and a wrong slot
value: a constant, a quoted letter or an argument name the docstring gives. Whether RL can
fix that depends on whether the model already leans towards the right value, which
``cgrpo probe`` (evaluation/probe.py) and the pretraining's periodic evaluation read by
masking exactly these slots. This module is the text side only (no torch): find the slots,
turn them into masked-token queries for a tokenizer, and aggregate the answers per task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from tasks.record import Task, TaskError

CONSTANT, LETTER, NAME = "constant", "letter", "name"
KINDS = (CONSTANT, LETTER, NAME)
ALTERNATIVES = {CONSTANT: 9, LETTER: 5}  # the generator's slot values: constants 1-9, letters "aeiot"

# Docstring phrases whose numbers are fixed text, not slots ("or -1 if there is none",
# "for i from 0 to n - 1"), and the body code they become.
_FIXED_DOC = re.compile(r"or -1 if there is none|from 0 to \w+ - 1")
_SIGNATURE = re.compile(r"def \w+\(([^)]*)\)")
_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)


@dataclass(frozen=True)
class Slot:
    """One occurrence of a slot value in the canonical body: characters ``[start, end)``."""

    kind: str
    start: int
    end: int
    alternatives: int


@dataclass(frozen=True)
class SlotQuery:
    """One slot to read: the full sequence (prompt + body + EOS padding) and the positions to
    mask; the model is asked for the tokens that are there."""

    task: int
    kind: str
    alternatives: int
    ids: tuple[int, ...]
    masked: tuple[int, ...]


def find_slots(prompt: str, body: str) -> list[Slot]:
    """The slot occurrences of a built-in task's canonical body.

    A constant is a digit 1-9 the docstring states (outside its fixed phrases); a letter is a
    quoted single character the docstring names; a name is an argument the docstring mentions,
    counted only when the function has two or more arguments (else there is nothing to choose).
    """
    signature, doc = _SIGNATURE.search(prompt), _DOCSTRING.search(prompt)
    if not signature or not doc:
        raise TaskError("the copy probe needs a built-in style prompt (signature + one-line docstring)")
    text = _FIXED_DOC.sub(" ", doc.group(1))
    args = [a.strip() for a in signature.group(1).split(",") if a.strip()]
    slots: list[Slot] = []
    for digit in sorted(set(re.findall(r"(?<![\w-])[1-9](?!\w)", text))):
        for m in re.finditer(rf"(?<!\w){digit}(?!\w)", body):
            if body[:m.start()].endswith("return -"):
                continue  # the "or -1 if there is none" return, not the constant
            slots.append(Slot(CONSTANT, m.start(), m.end(), ALTERNATIVES[CONSTANT]))
    for letter in sorted(set(re.findall(r"'(\w)'", text))):
        for m in re.finditer(rf"'({letter})'", body):
            slots.append(Slot(LETTER, m.start(1), m.end(1), ALTERNATIVES[LETTER]))
    if len(args) >= 2:
        for name in args:
            if re.search(rf"\b{re.escape(name)}\b", text):
                for m in re.finditer(rf"\b{re.escape(name)}\b", body):
                    slots.append(Slot(NAME, m.start(), m.end(), len(args)))
    return sorted(slots, key=lambda s: s.start)


def token_positions(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, ...]:
    """Indices of the tokens whose character span overlaps ``[start, end)``."""
    return tuple(i for i, (a, b) in enumerate(offsets) if a < end and b > start)


def slot_queries(tokenizer, tasks: Sequence[Task], width: int) -> tuple[list[SlotQuery], int]:
    """One query per distinct slot occurrence, in the sampler's completion layout (body then
    EOS up to ``width``); returns them and the number of tasks without a slot (or whose body
    does not fit ``width``)."""
    queries, without = [], 0
    eos = tokenizer.eos_token_id
    for index, task in enumerate(tasks):
        body = task.canonical_solution or ""
        slots = find_slots(task.prompt, body)
        prompt_ids = tokenizer(task.prompt, add_special_tokens=False)["input_ids"]
        enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
        body_ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if not slots or len(body_ids) >= width:
            without += 1
            continue
        ids = tuple(prompt_ids + body_ids + [eos] * (width - len(body_ids)))
        seen: set[tuple[int, ...]] = set()
        for slot in slots:
            positions = token_positions(offsets, slot.start, slot.end)
            if not positions or positions in seen:
                continue
            seen.add(positions)
            queries.append(SlotQuery(index, slot.kind, slot.alternatives, ids,
                                     tuple(len(prompt_ids) + p for p in positions)))
    return queries, without


def summarise(per_slot: Sequence[tuple[int, str, float, int]]) -> dict[str, dict[str, float]]:
    """Aggregate ``(task index, kind, p(correct), alternatives)`` rows into the probe.

    Each task counts once: its value is the mean probability over its slots (of a kind, or
    all kinds), its chance the mean of ``1 / alternatives``; the probe is the mean over tasks
    with the standard error across tasks (sample sd / sqrt(n)), beside the mean chance.
    """
    out: dict[str, dict[str, float]] = {}
    for kind in (*KINDS, "all"):
        tasks: dict[int, list[tuple[float, float]]] = {}
        rows = [r for r in per_slot if kind in ("all", r[1])]
        for task, _, p, alternatives in rows:
            tasks.setdefault(task, []).append((p, 1.0 / alternatives))
        if not tasks:
            continue
        values = [sum(p for p, _ in v) / len(v) for v in tasks.values()]
        chances = [sum(c for _, c in v) / len(v) for v in tasks.values()]
        n = len(values)
        mean = sum(values) / n
        se = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5 if n > 1 else 0.0
        out[kind] = {"tasks": n, "slots": len(rows), "p_correct": mean, "se": se, "chance": sum(chances) / n}
    return out
