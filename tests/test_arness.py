import pytest
import torch

from dllm.arness import global_arness, local_arness


@pytest.mark.parametrize("k", [1, 2, 4])
def test_left_to_right_is_fully_autoregressive(k):
    order = list(range(16))
    assert local_arness(order, k) == 1.0
    assert global_arness(order, k) == 1.0


def test_reversed_order_scores_low():
    order = list(range(16))[::-1]  # position 0 committed last
    assert local_arness(order, 1) == 0.0
    assert global_arness(order, 1) == pytest.approx(1 / 16)  # only the last event is left-most
    assert global_arness(order, 4) == pytest.approx(4 / 16)


def test_parallel_steps_count_left_to_right_within_a_step():
    order = [0, 0, 1, 1]  # two tokens per step, left to right
    assert local_arness(order, 1) == 1.0
    order = [1, 1, 0, 0]  # right half first
    assert local_arness(order, 1) == pytest.approx(2 / 4)
    assert global_arness(order, 1) == pytest.approx(2 / 4)


def test_local_k_requires_longer_runs():
    order = [0, 1, 4, 2, 3, 5]  # events (positions by step): 0, 1, 3, 4, 2, 5
    assert local_arness(order, 1) == pytest.approx(3 / 6)  # 0, 1 and 4 follow their predecessor
    assert local_arness(order, 2) == pytest.approx(2 / 6)  # 4 follows 3, but 3 did not follow 1


def test_batch_is_averaged_and_uncommitted_positions_ignored():
    batch = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    assert local_arness(batch, 1) == pytest.approx(0.5)
    assert local_arness([0, 1, -1, -1]) == 1.0
    with pytest.raises(ValueError):
        local_arness([0, 1], 0)
