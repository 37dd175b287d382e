"""The copy probe (`cgrpo probe`): slot finding (tasks/slots.py), the aggregation math, and the
masked read (dllm/infill.py, evaluation/probe.py)."""

from __future__ import annotations

import json

import pytest
import torch

import dllm
from orchestrator.cli import main as cli_main
from evaluation.probe import copy_probe
from tasks import builtin_tasks
from tasks.slots import CONSTANT, LETTER, NAME, find_slots, summarise, token_positions


def _prompt(signature: str, doc: str) -> str:
    return f"def {signature}:\n    \"\"\"{doc}\"\"\"\n"


def _slots(signature: str, doc: str, body: str) -> list[tuple[str, str, int]]:
    return [(s.kind, body[s.start:s.end], s.alternatives) for s in find_slots(_prompt(signature, doc), body)]


def test_find_slots_reads_the_docstrings_constants_letters_and_names():
    assert _slots("calc(a, b)", "Return b minus a times 3.", "    return b - a * 3\n") == [
        (NAME, "b", 2), (NAME, "a", 2), (CONSTANT, "3", 9)]
    # One argument: its name is no choice, so it is no slot.
    assert _slots("calc(x)", "Return x plus 7.", "    return x + 7\n") == [(CONSTANT, "7", 9)]
    assert _slots("edit(s)", "Return s with 'a' replaced by 'o'.", "    return s.replace('a', 'o')\n") == [
        (LETTER, "a", 5), (LETTER, "o", 5)]
    # The fixed "-1" and "0 to n - 1" phrases are text, not slots; the constant 1 is.
    body = "    for x in xs:\n        if x > 1:\n            return x\n    return -1\n"
    assert _slots("first(xs)", "Return the first item of xs that is greater than 1, or -1 if there is none.",
                  body) == [(CONSTANT, "1", 9)]
    body = "    total = 0\n    for i in range(n):\n        total += i * 4\n    return total\n"
    assert _slots("series(n)", "Return the sum of i times 4 for i from 0 to n - 1.", body) == [(CONSTANT, "4", 9)]
    assert _slots("edit(s)", "Return s in upper case.", "    return s.upper()\n") == []


def test_every_builtin_family_with_a_slot_value_gets_slots():
    tasks = builtin_tasks("validation")
    with_slots = [t for t in tasks if find_slots(t.prompt, t.canonical_solution)]
    assert len(with_slots) >= 0.9 * len(tasks)
    for t in with_slots:
        for s in find_slots(t.prompt, t.canonical_solution):
            value = t.canonical_solution[s.start:s.end]
            assert value in t.prompt.split('"""')[1], (t.task_id, value)


def test_token_positions_are_the_overlapping_tokens():
    offsets = [(0, 4), (4, 6), (6, 7), (7, 9)]
    assert token_positions(offsets, 5, 6) == (1,)
    assert token_positions(offsets, 5, 8) == (1, 2, 3)
    assert token_positions(offsets, 9, 10) == ()


def test_summarise_counts_each_task_once():
    rows = [(0, CONSTANT, 0.9, 9), (0, CONSTANT, 0.5, 9), (0, NAME, 1.0, 2), (1, CONSTANT, 0.1, 9), (2, LETTER, 0.2, 5)]
    out = summarise(rows)
    # Constant: task 0 averages its two slots (0.7), task 1 is 0.1.
    assert out[CONSTANT]["tasks"] == 2 and out[CONSTANT]["slots"] == 3
    assert out[CONSTANT]["p_correct"] == pytest.approx(0.4)
    assert out[CONSTANT]["se"] == pytest.approx(0.3)
    assert out[CONSTANT]["chance"] == pytest.approx(1 / 9)
    # All kinds: task 0 = (0.9 + 0.5 + 1.0) / 3, chance (1/9 + 1/9 + 1/2) / 3.
    assert out["all"]["p_correct"] == pytest.approx((0.8 + 0.1 + 0.2) / 3)
    assert out["all"]["chance"] == pytest.approx(((2 / 9 + 0.5) / 3 + 1 / 9 + 0.2) / 3)
    assert out[NAME]["tasks"] == 1 and out[NAME]["se"] == 0.0


class _ReadsItsInput(torch.nn.Module):
    """Predicts every position's own input token with certainty: it scores the right value
    only where the probe forgot to mask, and the mask token where it did mask."""

    def __init__(self, vocab: int, mask_token_id: int):
        super().__init__()
        self.vocab, self.mask_token_id = vocab, mask_token_id
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, attention_mask=None):
        return torch.nn.functional.one_hot(tokens, self.vocab).float() * 50.0


def test_probe_masks_the_slot_and_reads_the_right_token(repo_root):
    tokenizer = dllm.load_tokenizer(repo_root / "models" / "tiny-dllm")
    tasks = builtin_tasks("validation")[:20]
    copier = _ReadsItsInput(len(tokenizer), tokenizer.mask_token_id)
    result = copy_probe(copier, tokenizer, tasks)
    assert result["tasks"] == 20 and result["by_kind"]["all"]["tasks"] + result["without_slot"] == 20
    assert result["by_kind"]["all"]["p_correct"] < 1e-9  # the slot was masked: its value is unseen

    class Uniform(_ReadsItsInput):
        def forward(self, tokens, attention_mask=None):
            return torch.zeros(*tokens.shape, self.vocab)

    uniform = copy_probe(Uniform(len(tokenizer), tokenizer.mask_token_id), tokenizer, tasks)
    one_token = 1 / len(tokenizer)
    assert one_token ** 2 <= uniform["by_kind"]["all"]["p_correct"] <= one_token * 1.0001


def test_cli_probe_prints_the_table_and_json(repo_root, capsys):
    model = str(repo_root / "models" / "tiny-dllm")
    assert cli_main(["probe", "--model", model, "--split", "validation", "--limit", "12", "--json", "-"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["split"] == "validation" and result["tasks"] == 12
    assert 0 < result["by_kind"]["all"]["p_correct"] <= 1 and "chance" in captured.err
    assert cli_main(["probe", "--model", model, "--split", "humaneval"]) == 2
    assert "built-in tasks' slots" in capsys.readouterr().err
