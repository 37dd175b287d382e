"""Weight push between Ray nodes of the compose stack, against a raw TCP stream.

Uses the running compose stack (project ``cgrpo``) or brings one up (and removes it at
the end), runs a short job across its nodes (driver on the head, rollout actors on the
rollout nodes, learner ranks on the learner node, sandbox workers on the sandbox node)
and waits for it to succeed. Then, inside the cluster, on the same containers:

  push  the job's own parts: a learner group (one DeepSpeed rank) on the learner node
        publishes its weights (gathered and sealed in that node's object store, not timed),
        then ``RolloutPool.push_weights`` makes one rollout actor per rollout node load
        them. Timed from that call to the last actor serving the new version.
  tcp   the same number of bytes, sent from the learner node to one receiver on each
        rollout node over plain sockets at once, timed until every receiver has them all.

The model is the shipped tiny dLLM widened (``--hidden``, ``--layers``) so the transfer,
not the call overhead, is measured. Best of ``--repeats`` for each. The figure is push
throughput over TCP throughput.

    python bench/multinode.py [--project cgrpo] [--hidden 512] [--layers 8] [--repeats 3]

Last line (printed only after the job succeeded): ``cross_node_push_fraction: X.XX``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = "/app/runs/bench-multinode"  # on the stack's shared runs volume


# ---------------------------------------------------------------------------------------
# Inside the cluster (this file is piped to `python -` on the head container)
# ---------------------------------------------------------------------------------------

def widened_model(hidden: int, layers: int) -> tuple[str, int]:
    """The shipped model's config and tokenizer with ``hidden``/``layers``, random weights,
    on the shared volume (every node reads the same folder); (folder, bytes of weights)."""
    import shutil

    import dllm

    folder = Path(BENCH_DIR) / f"model-h{hidden}-l{layers}"
    if not (folder / "model.safetensors").is_file():
        shutil.copytree("/app/models/tiny-dllm", folder, dirs_exist_ok=True)
        config = dict(dllm.load_model(folder).raw_config, hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4)
        dllm.save_model(dllm.init_model(config, seed=0), folder)
    state = dllm.load_model(folder).checkpoint_state_dict()
    return str(folder), sum(t.numel() * t.element_size() for t in state.values())


def in_cluster(hidden: int, layers: int, repeats: int) -> dict:
    import socket
    import threading

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from learner.config import LearnerConfig
    from learner.group import LearnerGroup
    from rollout.pool import RolloutPool

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    alive = [n for n in ray.nodes() if n["Alive"]]
    learner_node = next(n for n in alive if n["Resources"].get("learner"))
    rollout_nodes = [n for n in alive if n["Resources"].get("rollout")]
    folder, nbytes = widened_model(hidden, layers)

    def pinned(node: dict) -> dict:
        return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)}

    @ray.remote
    class Sender:
        def send(self, targets: list[tuple[str, int]], nbytes: int) -> None:
            """Stream ``nbytes`` to every target at once; return when each has acknowledged."""
            payload = memoryview(bytearray(nbytes))

            def one(address: tuple[str, int]) -> None:
                with socket.create_connection(address) as s:
                    s.sendall(payload)
                    assert s.recv(1) == b"k"

            threads = [threading.Thread(target=one, args=(t,)) for t in targets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    @ray.remote
    class Receiver:
        """Reads whole streams into a buffer and acknowledges each."""

        def listen(self, nbytes: int) -> tuple[str, int]:
            self.buffer = memoryview(bytearray(nbytes))
            self.server = socket.create_server((ray.util.get_node_ip_address(), 0))
            threading.Thread(target=self._serve, daemon=True).start()
            return self.server.getsockname()[:2]

        def _serve(self) -> None:
            while True:
                conn, _ = self.server.accept()
                with conn:
                    got = 0
                    while got < len(self.buffer):
                        n = conn.recv_into(self.buffer[got:])
                        if not n:
                            break
                        got += n
                    conn.sendall(b"k")

    # The job's own parts: a one-rank learner group on the learner node, and a rollout pool
    # whose actors each take a whole rollout node's slots, so there is one per node.
    group = LearnerGroup(folder, learner=LearnerConfig(workers=1, resources={"learner": 1}), total_steps=1)
    slots = min(n["Resources"]["rollout"] for n in rollout_nodes)
    pool = RolloutPool(folder, len(rollout_nodes), resources={"rollout": slots})
    sender = Sender.options(**pinned(learner_node)).remote()
    receivers = [Receiver.options(**pinned(n)).remote() for n in rollout_nodes]
    try:
        placed = {"learner": group.workers_info[0]["node"], "rollout": sorted(i["node"] for i in pool.infos())}
        targets = ray.get([r.listen.remote(nbytes) for r in receivers])
        publish_s, push_s, tcp_s = [], [], []
        for version in range(1, repeats + 1):
            start = time.perf_counter()
            ref = group.publish_weights(version)  # gathered and sealed in the learner node's store
            publish_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            versions = pool.push_weights(version, ref)
            push_s.append(time.perf_counter() - start)
            assert versions == [version] * len(rollout_nodes), versions
            del ref
            start = time.perf_counter()
            ray.get(sender.send.remote(targets, nbytes))
            tcp_s.append(time.perf_counter() - start)
    finally:
        pool.shutdown()
        group.shutdown()
    return {"nbytes": nbytes, "publish_s": publish_s, "push_s": push_s, "tcp_s": tcp_s, "nodes": placed,
            "alive_nodes": len(alive)}


# ---------------------------------------------------------------------------------------
# On the host
# ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default="cgrpo", help="compose project to use or bring up (default cgrpo)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps of the job run first (default 3)")
    parser.add_argument("--in-cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_cluster:
        print("RESULT " + json.dumps(in_cluster(args.hidden, args.layers, args.repeats)))
        return

    sys.path.insert(0, str(REPO / "deploy"))
    from drill import job_yaml
    from stack import Stack, docker_answers

    if not docker_answers():
        sys.exit("bench/multinode.py: no Docker engine answers")
    stack, running = Stack.attach_or_new(args.project)
    try:
        if running:
            print(f"using the running stack {args.project}")
        else:
            stack.up()
        nodes = stack.wait_for_nodes()
        start = time.monotonic()
        job_id = stack.submit(job_yaml([f"run.steps={args.steps}", "run.eval_every=0", "run.checkpoint_every=0"]),
                              f"bench-{int(time.time())}")
        job = stack.wait_job(job_id, 1800)
        if job.get("status") != "succeeded":
            sys.exit(f"job {job_id} {job.get('status')}: {job.get('error', '')}")
        workers = stack.workers(job_id)
        roles = {role: sorted({w["node"] for w in workers if w["role"] == role}) for role in
                 ("rollout", "learner", "sandbox")}
        print(f"job {job_id}: {args.steps} steps succeeded in {time.monotonic() - start:.0f}s on "
              f"{len({n for ns in roles.values() for n in ns}) + 1} Ray nodes (driver on the head); "
              + "; ".join(f"{role} on {', '.join(ns)}" for role, ns in roles.items()))
        proc = stack.exec("ray-head", "python", "-", "--in-cluster", "--hidden", str(args.hidden),
                          "--layers", str(args.layers), "--repeats", str(args.repeats),
                          input=Path(__file__).read_text(), timeout=1200)
        result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    finally:
        if not running:
            stack.down()
    mb, receivers = result["nbytes"] / 1e6, len(result["nodes"]["rollout"])
    if len(set(result["nodes"]["rollout"]) | {result["nodes"]["learner"]}) != receivers + 1:
        sys.exit(f"the learner and rollout actors did not land on distinct nodes: {result['nodes']}")
    push, tcp = min(result["push_s"]), min(result["tcp_s"])
    print(f"cluster: {nodes} Ray nodes; weights {mb:.1f} MB from the learner node "
          f"{result['nodes']['learner']} to {receivers} rollout nodes {result['nodes']['rollout']}")
    print(f"object-store push (every rollout actor loads): {mb * receivers / push:8.1f} MB/s "
          f"({push * 1e3:.0f} ms; all: {', '.join(f'{s * 1e3:.0f}' for s in result['push_s'])} ms)")
    print(f"raw TCP stream, same bytes, same containers:   {mb * receivers / tcp:8.1f} MB/s "
          f"({tcp * 1e3:.0f} ms; all: {', '.join(f'{s * 1e3:.0f}' for s in result['tcp_s'])} ms)")
    print(f"(the learner's gather + put before each push: {min(result['publish_s']) * 1e3:.0f} ms, not counted)")
    print(f"cross_node_push_fraction: {tcp / push:.2f}")


if __name__ == "__main__":
    main()
