"""A stand-in CUDA device for a CPU-only torch, so that CI catches what only a GPU would show.

Our users run on CUDA; CI has no GPU. Two kinds of bug hide there: a host tensor (made without a
``device=``) meeting a GPU tensor in an op, and ``.numpy()`` on a GPU tensor. :class:`OnGPU`
tensors compute on the CPU but say they live on ``cuda:0``, refuse ``.numpy()``, and raise when an
op mixes them with a host tensor of one or more dimensions (0-d host tensors and indices may mix,
as on CUDA). Inside :class:`StandInGPU`, ``.to("cuda")``, ``.cuda()`` and factories given a CUDA
device make :class:`OnGPU` tensors; ``.to("cpu")`` and ``.cpu()`` make host ones.
:func:`on_stand_in_gpu` moves a module's parameters and buffers there.

Not covered: CUDA kernels themselves (dtype support, numerics), streams, ``torch.cuda.*`` calls and
CUDA generators; those need the real device.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

DEVICE = torch.device("cuda", 0)

# Host reads of stand-in GPU tensors, by kind: on CUDA each one waits for the GPU (a sync). Tests
# clear it and count, so a loop that reads a GPU tensor element by element shows.
READS: Counter[str] = Counter()
READ_OPS = {"item", "tolist", "__int__", "__float__", "__bool__", "__index__", "nonzero"}

# Ops that accept host tensors beside GPU ones (indices), or read only metadata.
MIXING_ALLOWED = {"__getitem__", "__setitem__", "index_put", "index_put_", "copy_", "size", "dim", "numel",
                  "tolist", "item", "__len__", "__bool__", "__int__", "__float__", "__index__", "__repr__",
                  "__format__", "is_floating_point"}
FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.full, torch.arange, torch.empty, torch.randn, torch.rand,
             torch.randint, torch.randperm, torch.linspace, torch.eye, torch.as_tensor, torch.zeros_like,
             torch.ones_like, torch.full_like, torch.empty_like, torch.randn_like, torch.rand_like}


def _means_gpu(device: Any) -> bool:
    if device is None or isinstance(device, bool):
        return False
    return isinstance(device, int) or torch.device(device).type == "cuda"


class OnGPU(torch.Tensor):
    """A CPU tensor that behaves, for placement, like one on ``cuda:0``."""

    @property
    def device(self) -> torch.device:
        return DEVICE

    @property
    def is_cuda(self) -> bool:
        return True

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        "host memory first.")

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        READS["cpu"] += 1
        return self.as_subclass(torch.Tensor).clone()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READ_OPS and any(isinstance(t, OnGPU) for t in tree_leaves((args, kwargs))):
            READS[name] += 1
        if name not in MIXING_ALLOWED:
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            host = [tuple(t.shape) for t in tensors if not isinstance(t, OnGPU) and t.dim() > 0]
            if host and any(isinstance(t, OnGPU) for t in tensors):
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"cuda:0 and cpu! ({getattr(func, '__name__', func)} with host tensors {host})")
        return super().__torch_function__(func, types, args, kwargs)


def _host(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_subclass(torch.Tensor)


class StandInGPU(TorchFunctionMode):
    """While active, a CUDA device in a factory, ``.to`` or ``.cuda`` means :class:`OnGPU`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func in FACTORIES and _means_gpu(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return func(*args, **kwargs).as_subclass(OnGPU)
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            return _host(args[0]).clone().as_subclass(OnGPU)
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            return self._to(args[0], list(args[1:]), kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _to(tensor: torch.Tensor, rest: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        target = kwargs.get("device")
        if "device" in kwargs:
            kwargs["device"] = "cpu"
        for index, item in enumerate(rest):
            if isinstance(item, torch.Tensor):  # .to(other): its device and dtype
                target, rest[index] = item.device, item.dtype
            elif isinstance(item, (str, torch.device)) or (isinstance(item, int) and not isinstance(item, bool)):
                target, rest[index] = item, "cpu"
        moved = torch.Tensor.to(_host(tensor), *rest, **kwargs)
        on_gpu = _means_gpu(target) if target is not None else isinstance(tensor, OnGPU)
        return moved.as_subclass(OnGPU) if on_gpu else _host(moved)


def on_stand_in_gpu(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter and buffer of ``module`` to the stand-in GPU (no copy)."""
    for sub in module.modules():
        for name, parameter in list(sub._parameters.items()):
            if parameter is not None:
                sub._parameters[name] = torch.nn.Parameter(parameter.detach().as_subclass(OnGPU),
                                                           requires_grad=parameter.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.as_subclass(OnGPU)
    return module
