"""Architecture gates phi and the ProxylessNAS path-binarization estimator.

One logit vector ``phi[label]`` per label (tied layers share it), ``p = softmax(phi)``. Each step
samples binary gates ``g`` (one-hot) and the forward pass runs exactly one path. The gate vector
handed to the layers is ``g = onehot + p - p.detach()`` (value one-hot, Jacobian dp/dphi), and
:class:`GateGrad` -- the identity on the active candidate's output ``y`` -- supplies ``dL/dg`` in
backward, so that autograd forms

    dL/dphi_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)

Candidate outputs. ``o_j`` is candidate j's real output on the layer's arriving tensor ``x``.
The ``zero`` candidate skips the layer: ``o_zero = x`` (channels and resolution unchanged; the next
layer reads whatever width arrives). This is not ProxylessNAS' convention (there zero sits on a
residual branch and outputs 0); with a skip, ``o_zero = 0`` would be a biased estimate, and identity
and zero that build the same network would get different gradients.

dL/dg_j for every candidate j evaluated at a layer (active candidate a, ``y = o_a``):

    dL/dg_j = < o_j , dL/dy >                        if o_j has the shape of y (ProxylessNAS)
    dL/dg_j = L_j - L_a + < y , dL/dy >              if the shapes differ

``L_j`` is the loss when candidate j runs at this layer and every other layer keeps the sampled
path; it is computed in backward under ``no_grad`` by running the rest of the network and the loss
(the owning supernet's ``forward_from`` and ``path_loss``). The second rule is needed where the
inner product is undefined: zero at a layer whose stride or width changes the shape (custom ops
could too).

Why the two rules mix consistently: ``sum_j p_j (delta_ij - p_i) = 0``, so adding one constant to
every ``dL/dg_j`` leaves ``dL/dphi`` unchanged -- only differences ``dL/dg_j - dL/dg_k`` matter.
The first-order rule gives ``dL/dg_j - dL/dg_a = < o_j - y, dL/dy >``, the first-order Taylor
estimate of ``L_j - L_a``; the second rule puts the exact difference ``L_j - L_a`` in its place on
the same offset ``< y, dL/dy >``. Identity and zero that build the same network have equal outputs,
hence equal ``dL/dg``. ``L_a`` is computed only at a layer where some evaluated candidate changes
the shape (each ``L_j`` costs one downstream forward pass). When the zero op is the active path the
layer still gets its :class:`GateGrad` (``y = x``) and phi still gets a gradient.

Recomputation rules (backward): candidates and downstream passes run under ``no_grad``, under the
autocast state of the forward (device type of the input, enabled flag and dtype, re-entered with
``cache_enabled=False``; the backward pass does not inherit it), with BatchNorm treated as in
the forward (batch statistics in train mode) but running statistics left untouched
(:func:`frozen_bn_stats`: the layer's own around its candidates, the owning supernet's around a
downstream pass). Inner products are accumulated in float32. The gradient w.r.t. ``y``
(hence ``x`` and the weights) passes through unchanged. The last ``dL/dg`` of each layer is kept in
``layer.last_dgate`` (diagnostics).

Modes:
- ``full``: every other candidate (zero included) is evaluated in backward (ProxylessNAS
  ``full_v2``; memory of one path).
- ``two``: two candidates are sampled from p (without replacement), the active one is drawn from
  their renormalized probabilities; only the other one is evaluated in backward (same two rules),
  only their two logits get gradients, and after the optimizer step the two logits are shifted so
  that their total probability mass relative to the others is unchanged
  (:meth:`ArchGates.after_arch_step`).
- ``all``: no sampling, ``y = sum_j p_j o_j`` over every candidate except zero (DARTS-style weighted
  sum; memory of all paths) -- kept only as the reference for the memory benchmark.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from typing import Mapping, Optional

import torch
from torch import nn

MODES = ("full", "two", "all")


_BN_LISTS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def batchnorms(module: nn.Module) -> list:
    """The BatchNorm modules of ``module``, cached per module: walking a supernet's module tree
    costs about a millisecond and the estimator's backward asks for it at every layer of every phi
    step. The cache is checked against the number of direct submodules of ``module`` and rebuilt
    when it changed (a supernet's structure is fixed once built)."""
    n = len(module._modules)
    cached = _BN_LISTS.get(module)
    if cached is None or cached[0] != n:
        cached = (n, [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])
        _BN_LISTS[module] = cached
    return cached[1]


@contextmanager
def frozen_bn_stats(module: nn.Module):
    """Run BatchNorm in batch-statistics mode without touching running statistics.

    A BatchNorm in train mode normalizes with the batch's statistics whether or not it tracks
    running ones; turning ``track_running_stats`` off for the block leaves its output exactly as it
    was and skips the running-statistics and ``num_batches_tracked`` updates (nothing to save and
    copy back: one flag per BatchNorm).
    """
    flipped = [m for m in batchnorms(module) if m.training and m.track_running_stats]
    # a plain attribute: object.__setattr__ skips nn.Module's parameter/buffer bookkeeping
    for m in flipped:
        object.__setattr__(m, "track_running_stats", False)
    try:
        yield
    finally:
        for m in flipped:
            object.__setattr__(m, "track_running_stats", True)


def autocast_state(t: torch.Tensor) -> Optional[tuple]:
    """``(device type, enabled, dtype)`` of the autocast state that applies to ``t`` now."""
    device = t.device.type
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        if not torch.amp.is_autocast_available(device):
            return None
        return device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    if device == "cpu":
        return device, torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    if device == "cuda":
        return device, torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return None


def autocast_as(state: Optional[tuple]):
    """Re-enter a state captured by :func:`autocast_state` (enabled or explicitly disabled)."""
    if state is None:
        return nullcontext()
    device, enabled, dtype = state
    return torch.autocast(device, dtype=dtype, enabled=enabled, cache_enabled=False)


def entropy_nats(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the probability vector ``p`` (zeros contribute nothing)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() * b.float()).sum()


class GateGrad(torch.autograd.Function):
    """Identity on the active path's output ``y``; backward also returns ``dL/dg`` (module doc).

    ``layer`` provides ``run_candidate(j, x)``, ``downstream_loss(h, path, candidate, loss)``
    (the loss with ``h`` as this layer's output and the later layers on ``path``, a detached
    tensor; raises, naming ``candidate``, when it cannot be computed; leaves the BatchNorm running
    statistics of the layers it runs alone) and ``active_loss(y, path, candidate, loss)`` (the
    same for the active path, cached in ``loss``). ``loss`` is the path loss of the forward that
    built this node (:class:`~.supernet.PathLoss`, or None): it lives in this node's context, so a
    later forward never reuses its value. The candidates run under :func:`frozen_bn_stats` of
    ``layer``.
    """

    @staticmethod
    def forward(ctx, y, gate, x, layer, active, indices, loss=None):
        ctx.save_for_backward(x, y)
        ctx.layer, ctx.active, ctx.indices, ctx.loss = layer, active, tuple(indices), loss
        ctx.n, ctx.gate_device = gate.shape[0], gate.device
        ctx.autocast = autocast_state(x)
        ctx.path = dict(layer.gates.current)  # the path this forward ran (downstream layers)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        layer, active = ctx.layer, ctx.active
        dgate = torch.zeros(ctx.n, dtype=torch.float32, device=grad.device)
        offset = _dot(y, grad)
        dgate[active] = offset
        others = [j for j in ctx.indices if j != active]
        if others:
            with torch.no_grad(), autocast_as(ctx.autocast), frozen_bn_stats(layer):
                loss_active = None  # computed once, and only if some candidate changes the shape
                for j in others:
                    o = layer.run_candidate(j, x)
                    if o.shape == y.shape:
                        dgate[j] = _dot(o, grad)
                        continue
                    if loss_active is None:
                        loss_active = layer.active_loss(y, ctx.path, j, ctx.loss)
                    loss_j = layer.downstream_loss(o, ctx.path, j, ctx.loss)
                    # the difference in float64, rounded to float32 before the offset is added
                    dgate[j] = offset + (loss_j - loss_active).float()
        layer.last_dgate = dgate.detach()
        return grad, dgate.to(ctx.gate_device), None, None, None, None, None


class ArchGates(nn.Module):
    """phi per label, sampling, fixed paths, export; shared by every supernet that uses it."""

    def __init__(self, space, mode: str = "full", seed: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"path binarization mode {mode!r} unknown; use one of {MODES}")
        self.space, self.mode = space, mode
        self.labels = space.labels
        self.choices = {label: space.choices(label) for label in self.labels}
        keys = [self._key(l) for l in self.labels]
        if len(set(keys)) != len(keys):
            raise ValueError(f"labels {self.labels} collide once '.' is replaced by '_'")
        self.phi = nn.ParameterDict({self._key(l): nn.Parameter(torch.zeros(len(self.choices[l])))
                                     for l in self.labels})
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed: Optional[dict] = None
        self.current: dict = {}        # label -> active index
        self.gate_vectors: dict = {}   # label -> (gate tensor, indices) during arch steps
        self._two_old: dict = {}

    @staticmethod
    def _key(label: str) -> str:
        return label.replace(".", "_")

    def logits(self, label: str) -> torch.Tensor:
        return self.phi[self._key(label)]

    def probabilities(self) -> dict:
        """``{label: {choice: p}}`` (detached floats)."""
        out = {}
        for label in self.labels:
            p = torch.softmax(self.logits(label).detach().float(), 0).tolist()
            out[label] = dict(zip(self.choices[label], p))
        return out

    def entropy(self) -> dict:
        """Entropy (nats) of each label's distribution."""
        return {label: float(entropy_nats(torch.softmax(self.logits(label).detach().float(), 0)))
                for label in self.labels}

    # ------------------------------------------------------------------ paths
    def set_arch(self, arch: Optional[Mapping]) -> None:
        """Run exactly ``arch`` until ``set_arch(None)`` restores sampling."""
        if arch is None:
            self.fixed = None
            return
        arch = self.space.validate(arch)
        self.fixed = arch
        self.current = {l: self.choices[l].index(arch[l]) for l in self.labels}
        self.gate_vectors = {}

    def sample(self, arch_grad: bool = False, uniform: bool = False, mix: float = 0.0) -> dict:
        """Draw the path of the next forward pass(es) from p (or uniformly).

        With ``arch_grad`` the layers get gate vectors so phi receives the estimator's gradient.
        ``mix`` draws from ``(1 - mix) p + mix u`` (u uniform) instead: more exploration of the
        pool for weight steps (an architecture step must sample from p itself, as the estimator
        assumes). Returns the sampled architecture.
        """
        if mix and arch_grad:
            raise ValueError("sample(mix=...) is for weight steps: the phi estimator samples from p")
        if self.fixed is not None:
            raise RuntimeError("a fixed architecture is set (set_arch); call set_arch(None) first")
        self.gate_vectors, self._two_old = {}, {}
        arch = {}
        for label in self.labels:
            logits = self.logits(label)
            n = logits.shape[0]
            p_cpu = (torch.full((n,), 1.0 / n) if uniform
                     else torch.softmax(logits.detach().float().cpu(), 0))
            if mix:
                p_cpu = (1.0 - mix) * p_cpu + mix / n
            if not bool(torch.isfinite(p_cpu).all()):  # (p is on the host already: no extra sync)
                raise FloatingPointError(
                    f"the architecture logits phi of label {label!r} are not finite: an earlier "
                    "architecture step had a non-finite loss (lower the learning rates)")
            if self.mode == "two" and arch_grad and n >= 2:
                idx = torch.multinomial(p_cpu, 2, replacement=False, generator=self.generator).tolist()
                p2 = torch.softmax(logits[idx].float(), 0)
                pick = int(torch.rand((), generator=self.generator) >= p2[0].detach().cpu())
                active = idx[pick]
                onehot = torch.zeros(2, device=logits.device)
                onehot[pick] = 1.0
                gate = torch.zeros(n, device=logits.device).index_put(
                    (torch.tensor(idx, device=logits.device),), onehot + p2 - p2.detach())
                self.gate_vectors[label] = (gate, tuple(idx))
                self._two_old[label] = (idx, logits.detach()[idx].clone())
            else:
                active = int(torch.multinomial(p_cpu, 1, generator=self.generator))
                if arch_grad:
                    p = torch.softmax(logits.float(), 0)
                    onehot = torch.zeros(n, device=logits.device)
                    onehot[active] = 1.0
                    self.gate_vectors[label] = (onehot + p - p.detach(), tuple(range(n)))
            self.current[label] = active
            arch[label] = self.choices[label][active]
        return arch

    def use_path(self, arch: Mapping, arch_grad: bool = False) -> None:
        """Make ``arch`` the path of the next forward pass as if it had been sampled (``full``
        gates when ``arch_grad``); unlike :meth:`set_arch` the path is not fixed."""
        if self.fixed is not None:
            raise RuntimeError("a fixed architecture is set (set_arch); call set_arch(None) first")
        arch = self.space.validate(arch)
        self.gate_vectors, self._two_old = {}, {}
        for label in self.labels:
            self.current[label] = self.choices[label].index(arch[label])
            if arch_grad:
                p = torch.softmax(self.logits(label).float(), 0)
                onehot = torch.zeros_like(p)
                onehot[self.current[label]] = 1.0
                self.gate_vectors[label] = (onehot + p - p.detach(), tuple(range(p.numel())))

    def active(self, label: str):
        """(active index, gate vector or None, indices recomputed in backward) for ``label``."""
        if label not in self.current:
            raise RuntimeError("no path selected: call sample() or set_arch(arch) before forward")
        gate, indices = self.gate_vectors.get(label, (None, ()))
        return self.current[label], gate, indices

    def current_arch(self) -> dict:
        return {l: self.choices[l][self.current[l]] for l in self.labels if l in self.current}

    @torch.no_grad()
    def after_arch_step(self) -> None:
        """``two`` mode: keep the involved paths' total probability mass after the update."""
        for label, (idx, old) in self._two_old.items():
            logits = self.logits(label)
            new = logits[idx]
            offset = torch.logsumexp(new, 0) - torch.logsumexp(old.to(new), 0)
            logits[idx] = new - offset
        self._two_old = {}

    def export(self, mode: str = "argmax", seed: Optional[int] = None) -> dict:
        """The most likely architecture (deterministic), or a sample from p with ``seed``."""
        arch = {}
        if mode == "argmax":
            for label in self.labels:
                arch[label] = self.choices[label][int(torch.argmax(self.logits(label).detach()))]
        elif mode == "sample":
            g = torch.Generator().manual_seed(0 if seed is None else seed)
            for label in self.labels:
                p = torch.softmax(self.logits(label).detach().float().cpu(), 0)
                arch[label] = self.choices[label][int(torch.multinomial(p, 1, generator=g))]
        else:
            raise ValueError(f"export mode {mode!r} unknown; use 'argmax' or 'sample'")
        return arch

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self):
        """The sampler's RNG state travels with ``state_dict()`` (exact resume)."""
        return self.generator.get_state()

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state.cpu() if isinstance(state, torch.Tensor) else state)

