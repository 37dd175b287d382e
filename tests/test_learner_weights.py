"""learner/weights.py: published weights pickle as out-of-band byte buffers (what makes the
object store's cross-node push copy-free on the reader) and come back exact, every dtype."""

from __future__ import annotations

import pickle

import torch

from learner.weights import ZeroCopyState


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(64, 32, generator=g), "b": torch.randn(7, generator=g).to(torch.bfloat16),
            "h": torch.randn(3, 5, generator=g).half(), "step": torch.tensor(3), "empty": torch.zeros(0, 4),
            "strided": torch.randn(8, 6, generator=g).t()}


def test_round_trip_is_exact_for_every_dtype_and_shape():
    state = _state()
    buffers: list = []
    data = pickle.dumps(ZeroCopyState(state), protocol=5, buffer_callback=buffers.append)
    back = pickle.loads(data, buffers=buffers)
    assert type(back) is dict and set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name


def test_tensor_bytes_travel_out_of_band_and_are_not_copied_on_read():
    state = {"w": torch.arange(4096, dtype=torch.float32)}
    buffers: list = []
    data = pickle.dumps(ZeroCopyState(state), protocol=5, buffer_callback=buffers.append)
    assert len(data) < 1000, "the tensor's bytes went in-band"  # 16 KB of weights
    assert sum(b.raw().nbytes for b in buffers) == 4096 * 4
    plain = pickle.dumps(state, protocol=5, buffer_callback=[].append)
    assert len(plain) > 4096 * 4, "a plain torch state dict is expected to pickle in-band"
    # The reader's tensor views the buffer it was given: no copy on the way out.
    backing = bytearray(buffers[0].raw())
    back = pickle.loads(data, buffers=[backing])
    backing[:4] = torch.tensor([42.0]).numpy().tobytes()
    assert back["w"][0].item() == 42.0 and back["w"][1].item() == 1.0
