"""deploy/preflight.py: a job's rollout / learner / sandbox layout on a real Ray cluster.

The multi-node test starts a real Ray cluster of several raylets on this machine
(ray.cluster_utils.Cluster: a CPU-only head and worker nodes advertising `learner_gpu`
and `rollout_gpu` as the KubeRay worker groups do), reserves the job's placement groups,
checks that PACK keeps the learner group on one node and SPREAD splits it, and runs the
learner all-reduce, the rank-0 -> rollout broadcast and the object-store weight push
between probe actors in those bundles (gloo here; NCCL on distinct GPUs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
import preflight  # noqa: E402


def test_job_demands_follow_the_config_sections():
    job = yaml.safe_load((REPO / "deploy" / "examples" / "job-kuberay.yaml").read_text())
    demands = {d.role: d for d in preflight.job_demands(job)}
    assert demands["rollout"].count == 8
    assert demands["rollout"].bundle == {"CPU": 1.0, "GPU": 1.0, "rollout_gpu": 1.0}
    assert demands["learner"].bundle == {"CPU": 1.0, "GPU": 1.0, "learner_gpu": 1.0}
    assert demands["learner"].strategy == "PACK" and demands["learner"].count == 8
    assert demands["sandbox"].count == 32 and demands["sandbox"].bundle == {"CPU": 1.0}
    # Defaults come from the job schema: a bare job asks for CPUs only.
    bare = {d.role: d for d in preflight.job_demands({})}
    assert all(set(d.bundle) == {"CPU"} for d in bare.values())


def test_first_fit_counts_what_fits_at_once():
    demands = preflight.job_demands({"rollout": {"actors": 3, "resources": {"rollout_gpu": 1}},
                                     "learner": {"workers": 2, "resources": {"learner_gpu": 1}},
                                     "sandbox": {"workers": 4}})
    nodes = {"r": {"CPU": 2, "rollout_gpu": 2}, "l": {"CPU": 2, "learner_gpu": 2}, "s": {"CPU": 3}}
    assert preflight.first_fit(demands, nodes) == {"learner": 2, "rollout": 2, "sandbox": 3}
    nodes["r2"] = {"CPU": 2, "rollout_gpu": 2}
    nodes["s2"] = {"CPU": 1}
    assert preflight.first_fit(demands, nodes) == {"learner": 2, "rollout": 3, "sandbox": 4}


def test_unreadable_job_is_a_usage_error(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("learner: {workers: 0}\n")
    lines: list[str] = []
    assert preflight.run(str(bad), None, 1, False, 1, print_fn=lines.append) == 2
    assert lines[0].startswith("error:") and "workers" in lines[0]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=2, resources={"learner_gpu": 2})
    cluster.add_node(num_cpus=4, resources={"rollout_gpu": 2})
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _job(tmp_path, placement: str, learner_workers: int = 2, per_worker: int = 1) -> str:
    path = tmp_path / f"job-{placement}-{learner_workers}.yaml"
    path.write_text(yaml.safe_dump({
        "rollout": {"actors": 2, "num_gpus": 0, "resources": {"rollout_gpu": 1}},
        "learner": {"workers": learner_workers, "num_gpus": 0, "resources": {"learner_gpu": per_worker},
                    "placement": placement},
        "sandbox": {"workers": 1, "backend": "jail"},
    }))
    return str(path)


def _wait_idle(timeout_s: float = 30.0) -> None:
    """Released bundles return to their raylets asynchronously; a soft SPREAD placed
    before they are back would see only the other node free."""
    import time

    import ray
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        total, free = ray.cluster_resources(), ray.available_resources()
        if all(free.get(k, 0) >= total[k] for k in ("CPU", "learner_gpu", "rollout_gpu")):
            return
        time.sleep(0.1)
    raise AssertionError(f"cluster not idle: {ray.available_resources()}")


def _placed_nodes(lines: list[str], role: str) -> int:
    line = next(line for line in lines if line.strip().startswith(f"placed {role}:"))
    return int(line.split(" on ")[1].split()[0])


@pytest.mark.slow
def test_placement_strategies_and_collectives_on_a_multi_node_cluster(ray_cluster, tmp_path):
    _wait_idle()
    lines: list[str] = []
    assert preflight.run(_job(tmp_path, "PACK"), None, 30, False, 1, print_fn=lines.append) == 0, lines
    assert _placed_nodes(lines, "learner") == 1, lines  # both learner bundles on one node
    assert _placed_nodes(lines, "rollout") == 1         # only one node offers rollout_gpu

    lines = []
    _wait_idle()
    assert preflight.run(_job(tmp_path, "SPREAD"), None, 30, True, 4, print_fn=lines.append) == 0, lines
    assert _placed_nodes(lines, "learner") == 2, lines  # one learner bundle per node
    checks = [line for line in lines if line.strip().startswith(("ok", "FAIL"))]
    assert len(checks) == 3 and all(line.strip().startswith("ok") for line in checks), lines
    assert "gloo" in checks[0] and "[2 ranks]" in checks[0]
    assert "[3 ranks]" in checks[1] and "GB/s" in checks[1]   # rank 0 + 2 rollout actors
    assert lines[-1] == "preflight: ok"


@pytest.mark.slow
def test_a_job_larger_than_the_cluster_is_reported_not_hung(ray_cluster, tmp_path):
    _wait_idle()
    lines: list[str] = []
    # 3 learner workers x 2 learner_gpu: the cluster has 2 nodes x 2.
    assert preflight.run(_job(tmp_path, "PACK", 3, 2), None, 2, True, 1, print_fn=lines.append) == 1
    assert any("only 2 fit now" in line for line in lines), lines
    assert lines[-1].startswith("preflight: FAILED (learner: 3 x")
    assert "rollout" not in lines[-1] and "sandbox" not in lines[-1]  # those still fit
