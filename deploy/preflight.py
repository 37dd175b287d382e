#!/usr/bin/env python3
"""Preflight a job YAML against a live Ray cluster: will its layout fit, and do the
learner's collectives and the weight push work between the places Ray gives them?

A job config maps each role to Ray resources (docs/gpu.md):
  rollout  `rollout.actors` actors, each {CPU: num_cpus, GPU: num_gpus, **resources}
  learner  `learner.workers` workers, each {CPU, GPU, **resources}, all in ONE placement
           group with strategy `learner.placement` (PACK / SPREAD / STRICT_*)
  sandbox  `sandbox.workers` workers, each {CPU: num_cpus, **resources}
This tool reserves exactly those bundles as placement groups (so on KubeRay the
autoscaler adds the pods they need), then, with --collectives, starts one probe actor per
rollout and learner bundle and checks, with real tensors:
  - an all-reduce across the learner workers (NCCL when every worker owns a distinct GPU,
    gloo otherwise: what DeepSpeed's process group will use);
  - the weight push from learner rank 0 to every rollout actor, both through Ray's object
    store (put once, every actor reads) and as a collective broadcast over the same
    backend choice (a single NCCL group needs every member on its own GPU).
Everything is released at the end. Run it on the head (or anywhere with Ray access):

    python deploy/preflight.py JOB.yaml [--address auto] [--timeout 300] [--collectives] [--weights-mb 64]

Prints a table per check and, last, `preflight: ok` or `preflight: FAILED (...)`; exits 0
or 1 (2 for a job YAML it cannot read).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout or /app in the image
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class RoleDemand:
    """One role's request to Ray: `count` bundles of `bundle`, placed with `strategy`."""

    role: str
    count: int
    bundle: dict[str, float]
    strategy: str


def job_demands(job: dict) -> list[RoleDemand]:
    """The bundles a job config asks for, with the config schema's own defaults."""
    from learner.config import LearnerConfig
    from rollout.config import RolloutConfig
    from sandbox.config import SandboxConfig

    def bundle(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
        out = {"CPU": float(cpus), "GPU": float(gpus), **{k: float(v) for k, v in custom.items()}}
        return {k: v for k, v in out.items() if v > 0}

    rollout = RolloutConfig.model_validate(job.get("rollout") or {})
    learner = LearnerConfig.model_validate(job.get("learner") or {})
    sandbox = SandboxConfig.model_validate(job.get("sandbox") or {})
    return [
        RoleDemand("learner", learner.workers, bundle(learner.num_cpus, learner.num_gpus, learner.resources),
                   learner.placement),
        RoleDemand("rollout", rollout.actors, bundle(rollout.num_cpus, rollout.num_gpus, rollout.resources), "SPREAD"),
        RoleDemand("sandbox", sandbox.workers, bundle(sandbox.num_cpus, 0, sandbox.resources), "SPREAD"),
    ]


def first_fit(demands: list[RoleDemand], nodes: dict[str, dict[str, float]]) -> dict[str, int]:
    """How many bundles of each role fit at once on `nodes` (free resources per node),
    placing roles in order, each bundle on the first node with room. Pure; used to say
    what is missing before waiting on placement groups."""
    free = {node: dict(res) for node, res in nodes.items()}
    placed: dict[str, int] = {}
    for demand in demands:
        placed[demand.role] = 0
        for _ in range(demand.count):
            node = next((n for n, res in free.items()
                         if all(res.get(k, 0.0) >= v for k, v in demand.bundle.items())), None)
            if node is None:
                break
            for k, v in demand.bundle.items():
                free[node][k] -= v
            placed[demand.role] += 1
    return placed


def _alive_nodes() -> dict[str, dict[str, float]]:
    import ray
    return {n["NodeID"][:8]: {k: float(v) for k, v in n["Resources"].items()}
            for n in ray.nodes() if n["Alive"]}


def reserve(demands: list[RoleDemand], timeout_s: float) -> tuple[dict, list[str]]:
    """Reserve one placement group per role, in order, each kept while the next is tried
    (so success means the whole job fits at once); a role that cannot be placed within
    `timeout_s` is released and reported. Returns the placed groups and the problems."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    groups, problems = {}, []
    for d in demands:
        pg = placement_group([dict(d.bundle) for _ in range(d.count)], strategy=d.strategy,
                             name=f"cgrpo-preflight-{d.role}")
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if ready:
            groups[d.role] = pg
        else:
            remove_placement_group(pg)
            problems.append(f"{d.role}: {d.count} x {d.bundle} ({d.strategy}) not placed within {timeout_s:g}s")
    return groups, problems


def _wait_removed(groups: list, timeout_s: float = 30.0) -> None:
    """Removal is asynchronous: wait until the GCS has released every group, so the
    cluster is as we found it when this tool returns."""
    from ray.util.placement_group import placement_group_table
    deadline = time.monotonic() + timeout_s
    while groups and time.monotonic() < deadline:
        groups = [pg for pg in groups if placement_group_table(pg).get("state") != "REMOVED"]
        if groups:
            time.sleep(0.1)


def _bundle_nodes(pg) -> list[str]:
    from ray.util.placement_group import placement_group_table
    table = placement_group_table(pg)
    return [table["bundles_to_node_id"][i][:8] for i in range(len(table["bundles"]))]


def _probe_class():
    import ray

    @ray.remote
    class Probe:
        """Stands where a learner worker or rollout actor would, with the same resources."""

        def __init__(self):
            import torch
            self.cuda = torch.cuda.is_available()
            self.device = torch.device("cuda", 0) if self.cuda else torch.device("cpu")

        def where(self) -> dict:
            import socket

            import ray as _ray
            import torch
            uuid = str(torch.cuda.get_device_properties(0).uuid) if self.cuda else None
            with socket.socket() as s:  # a free port for a process group rooted here
                s.bind(("", 0))
                port = s.getsockname()[1]
            return {"ip": _ray.util.get_node_ip_address(), "port": port, "gpu": uuid}

        def init_group(self, rank: int, world: int, addr: str, port: int) -> bool:
            """The world of all probes, over gloo; NCCL comes per subgroup where it can work."""
            import datetime

            import torch.distributed as dist
            dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank,
                                    world_size=world, timeout=datetime.timedelta(seconds=120))
            return True

        def _group(self, ranks: list[int], backend: str):
            import torch
            import torch.distributed as dist
            group = dist.new_group(ranks, backend=backend)  # every rank must call this
            device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
            return group, device, dist.get_rank() in ranks

        def all_reduce(self, ranks: list[int], backend: str) -> float:
            import torch
            import torch.distributed as dist
            group, device, member = self._group(ranks, backend)
            x = torch.ones(1024, device=device)
            if member:
                dist.all_reduce(x, group=group)
            return float(x[0])

        def broadcast(self, ranks: list[int], numel: int, backend: str) -> tuple[float, float]:
            """Rank ranks[0] broadcasts `numel` floats to `ranks`; (seconds, checksum)."""
            import torch
            import torch.distributed as dist
            group, device, member = self._group(ranks, backend)
            x = (torch.arange(numel, dtype=torch.float32, device=device) if dist.get_rank() == ranks[0]
                 else torch.zeros(numel, dtype=torch.float32, device=device))
            seconds = 0.0
            if member:
                dist.barrier(group=group)
                start = time.perf_counter()
                dist.broadcast(x, src=ranks[0], group=group)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            return seconds, float(x[-1])

        def put_weights(self, numel: int) -> list:
            import ray as _ray
            import torch
            return [_ray.put(torch.arange(numel, dtype=torch.float32))]  # wrapped: stays a ref

        def read_weights(self, refs: list) -> tuple[float, float]:
            import ray as _ray
            start = time.perf_counter()
            x = _ray.get(refs[0]).to(self.device)
            if self.cuda:
                import torch
                torch.cuda.synchronize()
            return time.perf_counter() - start, float(x[-1])

        def close(self) -> None:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()

    return Probe


def check_collectives(groups: dict, demands: dict[str, RoleDemand], weights_mb: float) -> tuple[list[dict], list[str]]:
    """Probe actors in the learner and rollout bundles; all-reduce, broadcast, object store."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    probe = _probe_class()
    actors = []
    for role in ("learner", "rollout"):
        d = demands[role]
        custom = {k: v for k, v in d.bundle.items() if k not in ("CPU", "GPU")}
        for i in range(d.count):
            actors.append(probe.options(
                num_cpus=d.bundle.get("CPU", 0), num_gpus=d.bundle.get("GPU", 0), resources=custom or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(groups[role], placement_group_bundle_index=i),
            ).remote())
    n_learn = demands["learner"].count
    world = len(actors)
    learner_ranks, push_ranks = list(range(n_learn)), [0] + list(range(n_learn, world))
    places = ray.get([a.where.remote() for a in actors])

    def backend(ranks: list[int]) -> tuple[str, str]:
        gpus = [places[r]["gpu"] for r in ranks]
        if all(gpus) and len(set(gpus)) == len(gpus):
            return "nccl", "every rank owns a distinct GPU"
        if not any(gpus):
            return "gloo", "no GPUs"
        return "gloo", "not every rank owns its own GPU (NCCL needs one GPU per rank)"

    numel = max(1, int(weights_mb * 2**20 / 4))
    import torch
    last = float(torch.tensor(numel - 1, dtype=torch.float32))  # the last value pushed, as float32
    rows, problems = [], []
    try:
        ray.get([a.init_group.remote(r, world, places[0]["ip"], places[0]["port"])
                 for r, a in enumerate(actors)], timeout=300)
        name, why = backend(learner_ranks)
        sums = ray.get([a.all_reduce.remote(learner_ranks, name) for a in actors], timeout=300)
        ok = all(s == n_learn for s in sums[:n_learn])
        rows.append({"check": f"learner all-reduce ({name}: {why})", "ranks": n_learn, "ok": ok, "detail": ""})
        if not ok:
            problems.append(f"learner all-reduce returned {sums[:n_learn]}, expected {n_learn}")
        name, why = backend(push_ranks)
        results = ray.get([a.broadcast.remote(push_ranks, numel, name) for a in actors], timeout=300)
        got = [results[r] for r in push_ranks]
        ok = all(checksum == last for _, checksum in got)
        seconds = max(s for s, _ in got)
        rows.append({"check": f"weight broadcast learner rank 0 -> rollout ({name}: {why})", "ranks": len(push_ranks),
                     "ok": ok, "detail": f"{weights_mb:g} MB in {seconds * 1e3:.1f} ms, "
                                         f"{weights_mb / 1024 / max(seconds, 1e-9):.2f} GB/s"})
        if not ok:
            problems.append("weight broadcast delivered wrong values")
        refs = ray.get(actors[0].put_weights.remote(numel))
        reads = ray.get([actors[r].read_weights.remote(refs) for r in push_ranks[1:]])
        ok = all(checksum == last for _, checksum in reads)
        seconds = max((s for s, _ in reads), default=0.0)
        rows.append({"check": "weight push through the object store", "ranks": len(reads), "ok": ok,
                     "detail": f"slowest reader {seconds * 1e3:.1f} ms"})
        if not ok:
            problems.append("object-store weight push delivered wrong values")
    finally:
        ray.get([a.close.remote() for a in actors], timeout=60)
        for a in actors:
            ray.kill(a)
    return rows, problems


def run(job_path: str, address: str | None, timeout_s: float, collectives: bool, weights_mb: float,
        print_fn=print) -> int:
    import ray
    from ray.util.placement_group import remove_placement_group

    try:
        job = yaml.safe_load(Path(job_path).read_text()) or {}
        demands = job_demands(job)
    except Exception as exc:  # noqa: BLE001 - missing file, bad YAML or an invalid section
        print_fn(f"error: {job_path}: {exc}")
        return 2
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    by_role = {d.role: d for d in demands}
    nodes = _alive_nodes()
    total = {k: sum(res.get(k, 0.0) for res in nodes.values()) for k in sorted({k for r in nodes.values() for k in r})
             if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    print_fn(f"cluster: {len(nodes)} nodes, " + ", ".join(f"{k} {v:g}" for k, v in total.items()))
    fits = first_fit(demands, nodes)
    for d in demands:
        note = "" if fits[d.role] == d.count else f"  <- only {fits[d.role]} fit now (an autoscaler may add nodes)"
        print_fn(f"  {d.role:8s} {d.count:4d} x {d.bundle} {d.strategy}{note}")
    groups, problems = reserve(demands, timeout_s)
    try:
        for role, pg in groups.items():
            spread = sorted(set(_bundle_nodes(pg)))
            print_fn(f"  placed {role}: {by_role[role].count} bundles on {len(spread)} node(s) {spread}")
        if collectives and not problems:
            rows, more = check_collectives(groups, by_role, weights_mb)
            problems += more
            for row in rows:
                print_fn(f"  {'ok  ' if row['ok'] else 'FAIL'} {row['check']} [{row['ranks']} ranks] {row['detail']}")
    finally:
        for pg in groups.values():
            remove_placement_group(pg)
        _wait_removed(list(groups.values()))
    print_fn("preflight: ok" if not problems else f"preflight: FAILED ({'; '.join(problems)})")
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("job", help="job YAML (the sections rollout, learner, sandbox are read)")
    parser.add_argument("--address", default="auto", help="Ray address (default: auto, the cluster this node is in)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for each role's placement group (an autoscaler may be adding nodes)")
    parser.add_argument("--collectives", action="store_true",
                        help="also run the all-reduce, broadcast and object-store checks with probe actors")
    parser.add_argument("--weights-mb", type=float, default=64.0, help="size of the weights pushed (default 64 MB)")
    args = parser.parse_args(argv)
    return run(args.job, args.address, args.timeout, args.collectives, args.weights_mb)


if __name__ == "__main__":
    sys.exit(main())
