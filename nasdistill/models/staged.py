"""The feature contract every nasdistill network follows.

A :class:`StagedModel` is ``stem -> stages[0] -> ... -> stages[S-1] -> embed -> classifier``:

- ``stem``: the first convolution(s); its output is RepDistiller's ``feat[0]``.
- ``stages``: an ``nn.ModuleList``; the output of each stage is the feature map RepDistiller
  returns as ``feat[1:-1]`` (post-activation for ResNets, VGG, ShuffleV1 and space networks; the
  raw residual sum for WRN, as RepDistiller does). These are the units that distillers pair and that teacher-side
  grafting (SFTN / GTN) splits into blocks.
- ``embed``: everything between the last stage and the classifier (final BN/ReLU or 1x1 conv,
  global pooling, flatten); its output is the pooled embedding (RepDistiller's ``feat[-1]``).
- ``classifier``: the final ``nn.Linear``.

Models whose stages end in a ReLU can also report pre-activation stage outputs: a stage module
that sets ``self.preact_out`` during forward when ``capture_preact`` is on (see
:meth:`StagedModel.forward_features`) gets it collected into ``Features.preact``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


class PreactStage(nn.Sequential):
    """A sequence of blocks whose pre-activation output is that of its last block."""

    @property
    def capture_preact(self) -> bool:
        return self[-1].capture_preact

    @capture_preact.setter
    def capture_preact(self, value: bool) -> None:
        self[-1].capture_preact = value

    @property
    def preact_out(self):
        return self[-1].preact_out

    @preact_out.setter
    def preact_out(self, value) -> None:
        self[-1].preact_out = value


@dataclass
class Features:
    """Everything a distiller may read from one forward pass."""

    stem: torch.Tensor
    stages: list[torch.Tensor]
    embedding: torch.Tensor
    logits: torch.Tensor
    preact: Optional[list[torch.Tensor]] = None


class StagedModel(nn.Module):
    """Base class: ``stem``, ``stages`` (ModuleList), ``embed``, ``classifier``."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], embed: nn.Module,
                 classifier: nn.Module):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.embed = embed
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.classifier(self.embed(h))

    def forward_features(self, x: torch.Tensor, preact: bool = False) -> Features:
        """Run the network once and return stem, stage, embedding and logit tensors.

        With ``preact=True`` the stage modules that support it (they expose a
        ``capture_preact`` attribute) also report their output before the final ReLU.
        """
        capturers = [s for s in self.stages if hasattr(s, "capture_preact")] if preact else []
        for s in capturers:
            s.capture_preact = True
        try:
            stem = self.stem(x)
            h = stem
            stages = []
            for stage in self.stages:
                h = stage(h)
                stages.append(h)
            embedding = self.embed(h)
            logits = self.classifier(embedding)
            pre = None
            if preact:
                pre = [getattr(s, "preact_out", None) if hasattr(s, "capture_preact") else o
                       for s, o in zip(self.stages, stages)]
        finally:
            for s in capturers:
                s.capture_preact = False
                s.preact_out = None
        return Features(stem=stem, stages=stages, embedding=embedding, logits=logits, preact=pre)

    def units(self) -> list[nn.Module]:
        """The ordered units teacher-side grafting splits into blocks: ``[stem, *stages]``."""
        return [self.stem, *self.stages]

    @torch.no_grad()
    def feature_shapes(self, input_size: tuple[int, int, int]) -> dict:
        """Shapes (C, H, W) of stem and stage outputs and the embedding width, by a dry run."""
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            feats = self.forward_features(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
        finally:
            self.train(was_training)
        return {
            "stem": tuple(feats.stem.shape[1:]),
            "stages": [tuple(f.shape[1:]) for f in feats.stages],
            "embedding": feats.embedding.shape[1],
        }
