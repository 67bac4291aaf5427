"""SoTeacher's Lipschitz surrogate ``Lip1``: a sum of per-layer upper bounds on the l1 Lipschitz constant.

Definition (as in the official SoTeacher code, ``helper/lip_util.py``), summed over the leaf modules:

- convolution (any ``_ConvNd``, transposed included): entry-wise L1 norm of the kernel, ``sum |W|``;
- batch norm: ``max_c |gamma_c| / sqrt(running_var_c + eps)`` (gamma = 1 when not affine; BNs without
  running statistics are skipped: they have no fixed affine map to bound);
- linear, ``W`` of shape (out, in): the max column abs-sum ``max_j sum_i |W_ij|`` (the induced l1
  operator norm).

It is the SUM of the bounds (a smooth, cheap surrogate), not their product (the actual bound of a
composition). Gradients reach conv/linear weights and BN's gamma; running_var is a buffer.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd


def layer_lip1(module: nn.Module) -> torch.Tensor | None:
    """The Lip1 bound of one conv / BN / linear module (None for any other module)."""
    if isinstance(module, _ConvNd):
        return module.weight.abs().sum()
    if isinstance(module, _BatchNorm):
        if module.running_var is None:
            return None
        scale = torch.rsqrt(module.running_var.float() + module.eps)
        if module.weight is not None:
            scale = module.weight.abs() * scale
        return scale.max()
    if isinstance(module, nn.Linear):
        return module.weight.abs().sum(dim=0).max()
    return None


def lip1(model: nn.Module) -> torch.Tensor:
    """``sum`` of :func:`layer_lip1` over every conv / BN / linear module of ``model`` (a 0-d tensor)."""
    terms = [t for t in (layer_lip1(m) for m in model.modules()) if t is not None]
    if not terms:
        param = next(model.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else "cpu")
    return torch.stack([t.float() for t in terms]).sum()
