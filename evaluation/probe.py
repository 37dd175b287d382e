"""The copy probe (``cgrpo probe``): does the model copy the docstring's slot values?

pass@k sees a model's leaning towards the right constant only through sampling noise; this
probe reads it directly and cheaply, running no code. For each built-in task the canonical
body is laid out after the prompt as the sampler lays out a completion, the tokens of one slot
(tasks/slots.py) are masked, everything else stays visible, and the probe reads the
probability of the right tokens there (dllm/infill.py). Chance is a uniform guess over the
slot's alternatives: 9 constants (1-9), 5 letters, or one of the function's arguments. A
probe well above chance is a skill RL can sharpen; one at chance leaves it nothing.
"""

from __future__ import annotations

from typing import Sequence

from dllm.infill import infill_probability
from tasks.record import Task, TaskError
from tasks.slots import slot_queries, summarise


def copy_probe(model, tokenizer, tasks: Sequence[Task], *, width: int = 48, batch_size: int = 64) -> dict:
    """``{"by_kind": {kind: {tasks, slots, p_correct, se, chance}}, "tasks": N, "without_slot": M}``
    (tasks without a slot, or whose body does not fit ``width``, are left out and counted)."""
    if not tasks:
        raise TaskError("no tasks to probe (check --split and --limit)")
    queries, without = slot_queries(tokenizer, tasks, width)
    if not queries:
        raise TaskError("none of these tasks has a slot the copy probe can read (it needs built-in tasks)")
    probs = infill_probability(model, [(q.ids, q.masked) for q in queries], tokenizer.pad_token_id or 0, batch_size)
    rows = [(q.task, q.kind, p, q.alternatives) for q, p in zip(queries, probs)]
    return {"by_kind": summarise(rows), "tasks": len(tasks), "without_slot": without}
