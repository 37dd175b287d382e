"""Shared fixtures: tiny random dLLMs (seconds on CPU), the shipped model's folder, and
private redis-servers: the whole session's default Redis is one of them, so no test ever
writes into the user's Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Where the user's jobs live (what $CGRPO_REDIS_URL said before the session replaced it).
USER_REDIS_URL = os.environ.get("CGRPO_REDIS_URL") or "redis://127.0.0.1:6390/0"

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


class RedisServer:
    """A throw-away redis-server on a spare loopback port, which a test can kill and restart on
    the same port. ``aof=True`` keeps its data across restarts in an append-only file under
    ``workdir`` (as the project's own Redis does); without it a restart comes back empty."""

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: scripts/setup.sh installs it"
        self.binary, self.workdir, self.aof, self.port = binary, workdir, aof, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        import redis

        # setpriv (util-linux) makes the server die with this process, even a killed one.
        die_with_us = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        self.proc = subprocess.Popen(
            [*die_with_us, self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: only what reached the append-only file survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def job_ids(url: str) -> set[str] | None:
    """The job ids in the index of the Redis at ``url``; None when it does not answer."""
    import redis

    try:
        return set(redis.Redis.from_url(url, socket_connect_timeout=0.5, decode_responses=True)
                   .zrange("cgrpo:jobs", 0, -1))
    except redis.RedisError:
        return None


@pytest.fixture(scope="session", autouse=True)
def session_redis(tmp_path_factory):
    """Every test's default Redis, a private server: $CGRPO_REDIS_URL points at it for the
    whole session, so jobs, CLI subprocesses and Ray drivers started by tests write there.
    At the end, no job with this session's pid in its id may have reached the user's Redis."""
    before = job_ids(USER_REDIS_URL) or set()
    server = RedisServer(tmp_path_factory.mktemp("session-redis")).start()
    os.environ["CGRPO_REDIS_URL"] = server.url
    yield server
    server.kill()
    leaked = {j for j in (job_ids(USER_REDIS_URL) or set()) - before if str(os.getpid()) in j}
    assert not leaked, f"tests wrote jobs into the user's Redis at {USER_REDIS_URL}: {sorted(leaked)}"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private real redis-server on a free port, for tests that fill or garble Redis."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.kill()


# --- a skipped Docker test where Docker runs is a failure ------------------------------------
# Docker tests skip on machines without an engine. Where an engine answers, a skip means a
# missing install step (no image, no compose) that would otherwise hide in a green run.

def sandbox_backends() -> list:
    """Both sandbox backends as parameters; Docker's is marked so, and skipped (with the
    reason) where its backend is unavailable, a skip the hook below fails where an engine answers."""
    from sandbox.container import why_unavailable

    reason = why_unavailable()
    return [pytest.param("jail", id="jail"),
            pytest.param("docker", id="docker", marks=[pytest.mark.docker, pytest.mark.skipif(
                reason is not None, reason=f"Docker backend unavailable: {reason}")])]


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
