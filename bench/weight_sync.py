"""Weight push from the learner to the rollout pool through Ray's shared-memory object store.

The learner puts one consolidated state dict (numpy arrays) into the object store once;
every rollout actor reads it (zero-copy on the same host) and serves it. The figure is
the bytes delivered to all actors per second, put included, next to a plain in-process
memcpy of the same tensors (the speed of copying them once per actor).

    python bench/weight_sync.py [--actors 2] [--hidden 512] [--layers 8]

Last line: ``fraction_of_memcpy: X.XX``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402

import dllm  # noqa: E402
from rollout.pool import RolloutPool  # noqa: E402
from tests.conftest import make_tiny_model_dir  # noqa: E402


def model_folder(hidden: int, layers: int) -> Path:
    folder = make_tiny_model_dir(Path(tempfile.mkdtemp(prefix="cgrpo-wsync-")))
    base = dllm.load_model(folder)
    config = dict(base.raw_config, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                  num_attention_heads=8, num_key_value_heads=4)
    dllm.save_model(dllm.init_model(config, seed=0), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = model_folder(args.hidden, args.layers)
    state = {k: v.detach().numpy().copy() for k, v in dllm.load_model(folder).checkpoint_state_dict().items()}
    nbytes = sum(a.nbytes for a in state.values())
    ray.init(address="local", num_cpus=args.actors + 1, include_dashboard=False, log_to_driver=False)
    try:
        pool = RolloutPool(str(folder), args.actors, num_cpus=1)
        pool.infos()  # actors up
        push_times = []
        for version in range(1, args.repeats + 1):
            start = time.perf_counter()
            ref = ray.put(state)
            versions = pool.push_weights(version, ref)
            push_times.append(time.perf_counter() - start)
            assert versions == [version] * args.actors, versions
        memcpy_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.actors):
                {k: np.copy(v) for k, v in state.items()}
            memcpy_times.append(time.perf_counter() - start)
        pool.shutdown()
    finally:
        ray.shutdown()
    delivered = nbytes * args.actors
    push_gbs = delivered / min(push_times) / 1e9
    memcpy_gbs = delivered / min(memcpy_times) / 1e9
    print(f"weights: {nbytes / 1e6:.1f} MB x {args.actors} actors")
    print(f"object-store push (put + every actor loads): {push_gbs:.2f} GB/s ({min(push_times) * 1e3:.1f} ms)")
    print(f"plain memcpy of the same tensors          : {memcpy_gbs:.2f} GB/s ({min(memcpy_times) * 1e3:.1f} ms)")
    print(f"fraction_of_memcpy: {push_gbs / memcpy_gbs:.2f}")


if __name__ == "__main__":
    main()
