"""Shared fixtures: tiny random dLLMs (seconds on CPU) and the shipped model's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("CGRPO_REDIS_URL", "redis://127.0.0.1:6390/0")

VOCAB, MASK, EOS, PAD = 64, 63, 62, 61


@pytest.fixture
def tiny_dream():
    import dllm
    return dllm.init_model(dllm.dream_config(VOCAB, MASK, EOS, PAD, hidden_size=32, num_layers=2,
                                             num_heads=4, num_kv_heads=2, intermediate_size=64), seed=0)


@pytest.fixture
def tiny_llada():
    import dllm
    return dllm.init_model(dllm.llada_config(VOCAB, MASK, EOS, d_model=32, n_layers=2, n_heads=4,
                                             mlp_hidden_size=64), seed=0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def make_tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A complete tiny model folder (byte-level BPE tokenizer + random Dream weights)."""
    import dllm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>", "<|mask|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["def add(a, b):\n    return a + b\n", "def f(x):\n    return x * 2\n"] * 20
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   mask_token="<|mask|>")
    ids = {s: tok.token_to_id(s) for s in specials}
    config = dllm.dream_config(tok.get_vocab_size(), ids["<|mask|>"], ids["<|endoftext|>"], ids["<|pad|>"],
                               hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    dllm.save_model(dllm.init_model(config, seed=seed), path, tokenizer=fast)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private real redis-server on a free port, for tests that fill or garble Redis."""
    import shutil
    import subprocess
    import time

    import redis
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: scripts/setup.sh installs it"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait(10)


# --- a skipped Docker test where Docker runs is a failure ------------------------------------
# Docker tests skip on machines without an engine. Where an engine answers, a skip means a
# missing install step (no image, no compose) that would otherwise hide in a green run.

def _docker_answers() -> bool:
    import subprocess

    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    is_docker = "docker" in item.keywords or "[docker" in item.nodeid or "-docker" in item.nodeid
    if report.skipped and is_docker and os.environ.get("CGRPO_ALLOW_DOCKER_SKIPS") != "1":
        if not hasattr(pytest_runtest_makereport, "engine"):
            pytest_runtest_makereport.engine = _docker_answers()
        if pytest_runtest_makereport.engine:
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
            report.outcome = "failed"
            report.longrepr = (f"skipped although a Docker engine answers on this machine: {reason} "
                               "(a missing install step? scripts/setup.sh builds the images; "
                               "CGRPO_ALLOW_DOCKER_SKIPS=1 accepts the skip)")
