"""Published weights that cross Ray's object store without being copied.

A state dict of torch tensors pickles in-band: every rollout actor that reads it unpickles
(copies) the whole model after the transfer, which costs about as much again as the
transfer between two nodes (bench/multinode.py). Wrapped in :class:`ZeroCopyState`, each
tensor pickles as a flat uint8 NumPy view of its bytes plus its dtype and shape; pickle
protocol 5, which Ray uses, ships NumPy buffers out-of-band, so the object store holds the
bytes once and a reader gets tensors that view the store's shared memory. Only bytes cross,
so every dtype (bfloat16 included) arrives as it left.

The tensors a reader gets are read-only views: the rollout worker only reads weights (it
adopts them as its parameters, ``assign=True``, so it serves them from shared memory).
"""

from __future__ import annotations

import warnings

import torch


class ZeroCopyState(dict):
    """A ``{name: CPU tensor}`` dict that unpickles as a plain dict of zero-copy tensors."""

    def __reduce__(self):
        items = [(name, t.detach().contiguous().reshape(-1).view(torch.uint8).numpy(),
                  str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in self.items()]
        return _rebuild, (items,)


def _rebuild(items: list) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():  # the store's buffers are read-only, which is the point
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {name: torch.from_numpy(raw).view(getattr(torch, dtype)).reshape(shape)
                for name, raw, dtype, shape in items}
