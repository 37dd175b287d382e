"""The shipped tiny dLLM (models/tiny-dllm): small, loadable, and it writes Python.

Completions are only *parsed* here (``ast.parse``), never executed: running model output
happens in the sandbox alone (`cgrpo eval`).
"""

from __future__ import annotations

import ast
import json

import pytest

import dllm
from modelprep.pretrain import encode, torch_threads
from tasks.builtin import builtin_tasks

FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "pretrain.json")


@pytest.fixture(scope="module")
def shipped(repo_root):
    folder = repo_root / "models" / "tiny-dllm"
    model = dllm.load_model(folder)
    tokenizer = dllm.load_tokenizer(folder)
    info = json.loads((folder / "pretrain.json").read_text())
    return folder, model, tokenizer, info


def test_folder_is_complete_and_small(shipped):
    folder, model, _, info = shipped
    for name in FILES:
        assert (folder / name).is_file(), f"models/tiny-dllm/{name} is missing"
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total <= 10 * 2**20, f"models/tiny-dllm is {total / 2**20:.1f} MB"
    assert model.layout == "dream" and model.shift
    config = info["config"]  # made by `cgrpo pretrain --steps S [--stop-at N]`, the command in its README
    assert info["steps"] == (config.get("stop_at") or config["steps"])
    command = f"--steps {config['steps']}" + (f" --stop-at {config['stop_at']}" if config.get("stop_at") else "")
    assert command in (folder / "README.md").read_text()


def test_tokenizer_round_trips_heldout_problems(shipped):
    _, model, tokenizer, _ = shipped
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id) == (
        model.eos_token_id, model.pad_token_id, model.mask_token_id)
    for task in builtin_tasks("heldout")[:50]:
        text = task.prompt + task.canonical_solution
        ids = encode(tokenizer, text)
        assert tokenizer.decode(ids) == text
        assert model.mask_token_id not in ids and model.eos_token_id not in ids


def test_generates_syntactically_complete_python_for_heldout_prompts(shipped):
    _, model, tokenizer, info = shipped
    n = info["max_new_tokens"]
    tasks = builtin_tasks("heldout")[:16]
    with torch_threads(1):  # a tiny model: one thread is as fast, and immune to a busy CPU
        gen = dllm.generate(model, [encode(tokenizer, t.prompt) for t in tasks], max_new_tokens=n, steps=n,
                            temperature=0.2, top_p=0.95, seed=0)
    parsed = []
    for task, ids in zip(tasks, gen.completions):
        completion = tokenizer.decode(ids)
        try:
            tree = ast.parse(task.prompt + completion)
        except SyntaxError:
            parsed.append(False)
            continue
        # A complete function: the entry point with a body that returns something.
        fn = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
        parsed.append(fn.name == task.entry_point and any(isinstance(x, ast.Return) for x in ast.walk(fn)))
    assert parsed[0], f"held-out prompt {tasks[0].task_id} did not get a complete function body"
    assert sum(parsed) >= 14, f"only {sum(parsed)}/16 held-out completions parse"
    # The completion ended with EOS padding well before the last position.
    assert all(len(ids) < n for ids in gen.completions)
