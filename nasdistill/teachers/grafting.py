"""Student branches grafted onto a teacher: the machinery SFTN and GTN share.

The teacher's units ``[stem, *stages]`` are split into N blocks ``B_T^1..B_T^N``. Branch ``i``
(``i = 1..N-1``) reads the teacher feature ``F_T^i`` (output of block i), adapts it with a
transform ``T^i`` and runs student blocks ``i+1..N`` and the student head:

    q_R^i = softmax(F_S^i(T^i(F_T^i)) / tau)

``T^i`` is a 3x3 strided convolution when the map must shrink, a 4x4 (2x) transposed convolution
when it must grow, a 1x1 convolution otherwise, followed by BatchNorm and ReLU (SFTN section 3.1).
Gradients of the branch losses reach the teacher through ``F_T^i`` (never detached).

The SFTN loss (eq. 3-6) on the teacher logits ``z_T`` and the branch logits ``z_R^i``:

    L = lam_T CE(z_T, y) + lam_KL / (N-1) sum_i KL(q~_R^i || q~_T) tau~^2 + lam_CE / (N-1) sum_i CE(z_R^i, y)
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def split_even(n_units: int, n_blocks: int) -> list[int]:
    """Block sizes as equal as possible, the larger blocks first (7 units, 3 blocks -> 3, 2, 2)."""
    if not 1 <= n_blocks <= n_units:
        raise ValueError(f"cannot split {n_units} units into {n_blocks} blocks")
    base, extra = divmod(n_units, n_blocks)
    return [base + (1 if i < extra else 0) for i in range(n_blocks)]


def blocks_from_sizes(sizes: Sequence[int], n_units: int) -> list[list[int]]:
    """Unit indices of each block from block sizes (which must sum to ``n_units``)."""
    if sum(sizes) != n_units or any(s < 1 for s in sizes):
        raise ValueError(f"block sizes {list(sizes)} must be positive and sum to {n_units}")
    out, start = [], 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


def teacher_blocks(teacher, n_blocks: int, sizes: Optional[Sequence[int]] = None) -> list[list[int]]:
    """Partition ``teacher.units()`` (stem + stages) into ``n_blocks`` blocks of unit indices."""
    n_units = len(teacher.units())
    return blocks_from_sizes(sizes if sizes else split_even(n_units, n_blocks), n_units)


class Transform(nn.Sequential):
    """``T^i``: teacher feature (c_in, h_in) -> student block input (c_out, h_out), then BN, ReLU."""

    def __init__(self, c_in: int, hw_in: tuple, c_out: int, hw_out: tuple):
        h_in, h_out = hw_in[0], hw_out[0]
        if h_out == h_in:
            conv: nn.Module = nn.Conv2d(c_in, c_out, 1, bias=False)
        elif h_out < h_in:
            stride = h_in // h_out
            if h_in % h_out:
                raise ValueError(f"transform cannot shrink {h_in} to {h_out} with an integer stride")
            conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        else:
            ratio = h_out // h_in
            if h_out % h_in or ratio % 2:
                raise ValueError(f"transform cannot grow {h_in} to {h_out} (needs an even ratio)")
            # ratio 2: the 4x4 stride-2 transposed convolution of SFTN
            conv = nn.ConvTranspose2d(c_in, c_out, 2 * ratio, ratio, ratio // 2, bias=False)
        super().__init__(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class StudentSuffix(nn.Module):
    """Deep copies of a student's units ``start..`` plus its embed and classifier."""

    def __init__(self, student, start_unit: int):
        super().__init__()
        units = student.units()
        self.units = nn.ModuleList(copy.deepcopy(u) for u in units[start_unit:])
        self.embed = copy.deepcopy(student.embed)
        self.classifier = copy.deepcopy(student.classifier)

    def forward(self, h):
        for u in self.units:
            h = u(h)
        return self.classifier(self.embed(h))


class Branch(nn.Module):
    def __init__(self, transform: nn.Module, suffix: nn.Module):
        super().__init__()
        self.transform, self.suffix = transform, suffix

    def forward(self, feature, path_loss=None):
        """Branch logits; ``path_loss`` (``logits -> scalar``) goes with this forward to a supernet
        suffix (its architecture step's loss, see :class:`~nasdistill.supernet.Supernet`)."""
        h = self.transform(feature)
        return self.suffix(h) if path_loss is None else self.suffix(h, path_loss=path_loss)


class BranchedTeacher(nn.Module):
    """A teacher with N-1 student branches; ``forward`` returns teacher and branch logits."""

    def __init__(self, teacher, blocks: list[list[int]], branches: Sequence[nn.Module]):
        super().__init__()
        if len(branches) != len(blocks) - 1:
            raise ValueError(f"{len(blocks)} teacher blocks need {len(blocks) - 1} branches, "
                             f"got {len(branches)}")
        self.teacher = teacher
        self.blocks = [list(b) for b in blocks]
        self.branches = nn.ModuleList(branches)

    def teacher_features(self, x):
        """Block outputs ``F_T^1..F_T^N`` and the teacher logits."""
        units = self.teacher.units()
        feats, h = [], x
        for block in self.blocks:
            for i in block:
                h = units[i](h)
            feats.append(h)
        return feats, self.teacher.classifier(self.teacher.embed(h))

    def forward(self, x, teacher_grad: bool = True, branch_ids: Optional[Sequence[int]] = None,
                branch_loss: Optional[Callable] = None):
        """Teacher logits and the logits of branches ``branch_ids`` (default: all).

        ``branch_loss(z_branch, z_teacher) -> scalar``: each branch's path loss for an
        architecture step, passed with this forward to its supernet suffix (with this forward's
        teacher logits).
        """
        if teacher_grad:
            feats, z_t = self.teacher_features(x)
        else:
            with torch.no_grad():
                feats, z_t = self.teacher_features(x)
        ids = range(len(self.branches)) if branch_ids is None else branch_ids
        if branch_loss is None:
            return z_t, [self.branches[i](feats[i]) for i in ids]
        fn = lambda z: branch_loss(z, z_t)  # noqa: E731
        return z_t, [self.branches[i](feats[i], path_loss=fn) for i in ids]


def block_output_shapes(teacher, blocks, input_size) -> list[tuple]:
    """(C, (H, W)) of each teacher block output."""
    shapes = teacher.feature_shapes(tuple(input_size))
    unit_shapes = [shapes["stem"], *shapes["stages"]]
    return [(unit_shapes[b[-1]][0], tuple(unit_shapes[b[-1]][1:])) for b in blocks]


def kl_branch_teacher(z_r: torch.Tensor, z_t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(q~_R || q~_T) * tau~^2``, summed over classes, batch-averaged (SFTN eq. 5)."""
    log_r = F.log_softmax(z_r / temperature, 1)
    log_t = F.log_softmax(z_t / temperature, 1)
    return (log_r.exp() * (log_r - log_t)).sum(1).mean() * temperature ** 2


def sftn_loss(z_t, branch_logits, y, lam_t=1.0, lam_kl=3.0, lam_ce=1.0, temperature=1.0):
    """SFTN eq. (3): returns (total, {"teacher_ce", "branch_kl", "branch_ce"})."""
    ce_t = F.cross_entropy(z_t, y)
    kl = torch.stack([kl_branch_teacher(z, z_t, temperature) for z in branch_logits]).mean()
    ce_r = torch.stack([F.cross_entropy(z, y) for z in branch_logits]).mean()
    total = lam_t * ce_t + lam_kl * kl + lam_ce * ce_r
    return total, {"teacher_ce": ce_t.detach(), "branch_kl": kl.detach(), "branch_ce": ce_r.detach()}
