"""timm's feature-extraction contract for RegNet: five feature levels (the stem at stride 2, then the four stages
at strides 4..32), `feature_take_indices` to select them, `FeatureInfo` to describe them, and `RegNetFeatures`,
the model `create_model(..., features_only=True)` returns."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .design import check_int
from .inputs import prepare_images

__all__ = ["feature_take_indices", "FeatureInfo", "RegNetFeatures"]


def feature_take_indices(num_levels: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's rule: None takes every level, an int n the last n, a sequence those levels (negative from the end).
    Returns the sorted distinct absolute indices and the largest."""
    if indices is None:
        indices = num_levels
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_levels:
            raise ValueError(f"indices={indices}: there are {num_levels} feature levels, so an int (the last n) "
                             f"must be in 1..{num_levels}")
        taken = list(range(num_levels - indices, num_levels))
    elif isinstance(indices, (list, tuple, range)):
        taken = []
        for i in indices:
            check_int("indices entry", i, minimum=-num_levels)
            if i >= num_levels:
                raise ValueError(f"indices entry {i} is out of range: there are {num_levels} feature levels "
                                 f"(valid: {-num_levels}..{num_levels - 1})")
            taken.append(i % num_levels)
        if not taken:
            raise ValueError("indices is empty")
        taken = sorted(set(taken))
    else:
        raise TypeError(f"indices must be None, an int or a sequence of ints, got {type(indices).__name__}")
    return taken, max(taken)


class FeatureInfo:
    """timm's FeatureInfo: per level {num_chs, reduction, module}, with accessors over the selected levels."""

    def __init__(self, levels: list[dict], out_indices: Sequence[int]):
        self.info = [dict(level) for level in levels]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None, idx=None) -> list[dict]:
        chosen = self.out_indices if idx is None else ([idx] if isinstance(idx, int) else idx)
        return [dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys} for i in chosen]

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class RegNetFeatures(nn.Module):
    """A RegNet body that returns the feature maps of `out_indices` (timm's levels: 0 the stem, 1-4 the stages),
    as timm's features_only models do. Keeps the model's module names (stem, trunk_output.blockS), so its
    state_dict is the classifier's without the head and the stages after the last selected level; the blocks run
    fused exactly as in the full model."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] = (0, 1, 2, 3, 4), as_dict: bool = False):
        super().__init__()
        self.as_dict = as_dict  # timm's feature_cls="dict": an OrderedDict keyed by the level, "0" .. "4"
        taken, last = feature_take_indices(len(model.feature_info), out_indices)
        self.out_indices = tuple(taken)
        self.in_channels = model.in_channels
        self.block_params = model.block_params
        self.stem = model.stem
        # keep the stage names (trunk_output.block1, ...), so keys and fx node names stay the model's
        self.trunk_output = nn.Sequential()
        for name, stage in list(model.trunk_output.named_children())[:last]:
            self.trunk_output.add_module(name, stage)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.pretrained_cfg = self.default_cfg = model.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | OrderedDict[str, torch.Tensor]:
        x = self.stem(prepare_images(x, self))
        feats = [x] if 0 in self.out_indices else []
        for i, stage in enumerate(self.trunk_output, start=1):
            x = stage(x)
            if i in self.out_indices:
                feats.append(x)
        if self.as_dict:
            return OrderedDict((str(i), f) for i, f in zip(self.out_indices, feats))
        return feats
