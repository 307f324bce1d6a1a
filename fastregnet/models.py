"""RegNet models with torchvision's constructors, module names and state_dict keys, plus timm's feature API."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from .design import RegNetParams, check_int, check_real, list_configs, regnet_params, resolve_name
from .layers import AnyStage, ConvNormActivation, SimpleStemIN

__all__ = ["RegNet", "RegNetY", "RegNetX", "create_model", "list_models"]


def _per_stage(value, n: int, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries but there are {n} stages")
        return tuple(value)
    return (value,) * n


class RegNet(nn.Module):
    """A RegNet / AnyNet: stem, stages of residual bottleneck blocks, global pool and a linear classifier.

    Build from a `RegNetParams` (as torchvision's `RegNet(block_params)`), or from per-stage lists:
    `RegNet(depths=[1, 3, 6, 6], widths=[48, 104, 208, 440], group_widths=8, se_ratio=0.25)`.
    Scalars for group_widths, bottleneck_multipliers and strides apply to every stage.

    timm's training options: `drop_rate` is dropout on the pooled features before the classifier (training only);
    `zero_init_last` starts every block's last BN gamma at 0, so each block begins as its shortcut. Both default
    off, as torchvision's models have neither.
    """

    def __init__(self, block_params: RegNetParams | None = None, num_classes: int = 1000, *,
                 depths: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                 group_widths: int | Sequence[int] = 1, bottleneck_multipliers: float | Sequence[float] = 1.0,
                 strides: int | Sequence[int] = 2, se_ratio: float | None = None, stem_width: int = 32,
                 drop_rate: float = 0.0, zero_init_last: bool = False):
        super().__init__()
        if block_params is None:
            if depths is None or widths is None:
                raise ValueError("RegNet needs block_params, or depths and widths")
            n = len(depths)
            block_params = RegNetParams(tuple(depths), _per_stage(widths, n, "widths"),
                                        _per_stage(group_widths, n, "group_widths"),
                                        _per_stage(bottleneck_multipliers, n, "bottleneck_multipliers"),
                                        _per_stage(strides, n, "strides"), se_ratio, stem_width)
        elif not isinstance(block_params, RegNetParams):
            raise TypeError(f"block_params must be a fastregnet.RegNetParams, got {type(block_params).__name__}")
        check_int("num_classes", num_classes, minimum=0)
        drop_rate = check_real("drop_rate", drop_rate, minimum=0.0)
        if drop_rate >= 1.0:
            raise ValueError(f"drop_rate must be < 1, got {drop_rate}")
        self.drop_rate = drop_rate
        self.block_params = block_params
        self.num_classes = num_classes
        self.in_channels = 3
        self.stem = SimpleStemIN(self.in_channels, block_params.stem_width)
        stages, width = [], block_params.stem_width
        for i, (d, w, g, b, s) in enumerate(block_params.stage_params()):
            stages.append((f"block{i + 1}", AnyStage(width, w, s, d, g, b, block_params.se_ratio, i + 1)))
            width = w
        self.trunk_output = nn.Sequential(OrderedDict(stages))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = width
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [{"num_chs": w, "reduction": 2 ** (i + 2), "module": f"trunk_output.block{i + 1}"}
                             for i, w in enumerate(block_params.widths)]
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool = False) -> None:
        # torchvision's (and pycls') ResNet-style init; fan_out ignores groups, as theirs does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for stage in self.trunk_output:
                for block in stage:
                    nn.init.zeros_(block.f.c[1].weight)

    @property
    def min_input_size(self) -> int:
        """The network's total stride: inputs at least this large keep every stage's map at least 1x1 without
        relying on padding. Smaller inputs (down to 1x1) run too, as in torchvision."""
        return 2 * math.prod(self.block_params.strides)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D input (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)});"
                             f" images must be NCHW")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}; convert images with x.float() / 255 "
                            f"and normalize them")
        if min(x.shape[-2:]) < 1:
            raise ValueError(f"input has an empty spatial size {tuple(x.shape[-2:])}")
        weight = self.stem[0].weight
        if x.device != weight.device:
            raise ValueError(f"input is on {x.device} but the model is on {weight.device}; move one with .to()")
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"input dtype {x.dtype} does not match the model's {weight.dtype}; cast one of them "
                            f"or run under torch.autocast")
        if self.training and x.shape[0] == 1 and math.prod(self._last_hw(x)) == 1:
            raise ValueError("training with batch size 1 and a 1x1 last stage: BatchNorm needs more than one value "
                             "per channel; use a larger batch or image")
        return x

    def _last_hw(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        for s in (2, *self.block_params.strides):
            h, w = (h - 1) // s + 1, (w - 1) // s + 1
        return h, w

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_input(x)
        if x.is_cuda:
            # The body runs NHWC (channels_last): the Triton kernels and cuDNN's fast grouped convs want it.
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32)."""
        return self.trunk_output(self.stem(self._prepare(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout (drop_rate, training only) and classifier; with pre_logits=True, the pooled
        features only."""
        x = torch.flatten(self.avgpool(x), 1)
        if self.drop_rate > 0.0:  # functional, so the module tree (and its hooks) stays torchvision's
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise LR decay): the stem, then each stage (coarse) or each block."""
        blocks = r"^trunk_output\.block(\d+)" if coarse else r"^trunk_output\.block(\d+)\.block\d+-(\d+)"
        return {"stem": r"^stem", "blocks": blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              stop_early: bool = False, intermediates_only: bool = False):
        """timm-style: returns (final_features, [feature map of each selected stage]); `indices` selects stages
        (0-based, negative from the end; an int n means the last n). With intermediates_only, just the list."""
        n = len(self.trunk_output)
        if indices is None:
            wanted = list(range(n))
        elif isinstance(indices, int) and not isinstance(indices, bool):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices}: this model has {n} stages, so an int must be in 1..{n}")
            wanted = list(range(n - indices, n))
        elif isinstance(indices, (list, tuple, range)):
            wanted = []
            for i in indices:
                check_int("indices entry", i, minimum=-n)
                if i >= n:
                    raise ValueError(f"indices entry {i} is out of range: this model has {n} stages "
                                     f"(valid: {-n}..{n - 1})")
                wanted.append(i % n)
            if not wanted:
                raise ValueError("indices is empty")
            wanted = sorted(set(wanted))
        else:
            raise TypeError(f"indices must be None, an int or a sequence of ints, got {type(indices).__name__}")
        x = self.stem(self._prepare(x))
        feats = []
        for i, stage in enumerate(self.trunk_output):
            x = stage(x)
            if i in wanted:
                feats.append(x)
            if stop_early and i == max(wanted):
                break
        return feats if intermediates_only else (x, feats)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 removes it)."""
        num_classes = check_int("num_classes", num_classes, minimum=0)
        self.num_classes = num_classes
        ref = self.fc.weight if isinstance(self.fc, nn.Linear) else self.stem[0].weight
        self.fc = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype) \
            if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module.load_state_dict; with strict=True a mismatch raises one error listing every missing,
        unexpected and mis-shaped key."""
        if strict:
            from .convert import check_state_dict

            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class RegNetY(RegNet):
    """RegNetY from its design parameters: depth, w0, wa, wm, group_width; SE ratio 0.25 by default.

    `rounding` picks how stage widths are made divisible by the group width: "pycls" (the paper's models) or
    "torchvision" (torchvision's builders).
    """

    def __init__(self, depth: int, w0: int, wa: float, wm: float, group_width: int, se_ratio: float | None = 0.25,
                 bottleneck_multiplier: float = 1.0, num_classes: int = 1000, rounding: str = "pycls",
                 stem_width: int = 32, drop_rate: float = 0.0, zero_init_last: bool = False):
        params = regnet_params(depth, w0, wa, wm, group_width, bottleneck_multiplier, se_ratio, rounding, stem_width)
        super().__init__(params, num_classes, drop_rate=drop_rate, zero_init_last=zero_init_last)


class RegNetX(RegNetY):
    """RegNetX: RegNetY without Squeeze-and-Excitation."""

    def __init__(self, depth: int, w0: int, wa: float, wm: float, group_width: int,
                 bottleneck_multiplier: float = 1.0, num_classes: int = 1000, rounding: str = "pycls",
                 stem_width: int = 32, drop_rate: float = 0.0, zero_init_last: bool = False):
        super().__init__(depth, w0, wa, wm, group_width, None, bottleneck_multiplier, num_classes, rounding,
                         stem_width, drop_rate, zero_init_last)


def list_models(pattern: str | None = None) -> list[str]:
    """Canonical names: the 15 torchvision builders, then the 24 pycls models. `pattern` is a glob, e.g. '*y*'."""
    return list_configs(pattern)


def create_model(name: str, weights: Any = None, progress: bool = True, **kwargs) -> RegNet:
    """Build a model by torchvision ("regnet_y_400mf"), pycls ("RegNetY-400MF") or timm ("regnety_004") name.

    `weights` as for the builders (see `fastregnet.weights`); kwargs go to the constructor
    (num_classes=...).
    """
    cfg = resolve_name(name)
    cls = RegNetY if cfg.se_ratio else RegNetX
    extra = {"se_ratio": cfg.se_ratio} if cls is RegNetY else {}
    from .weights import apply_weights, resolve_weights, weights_num_classes

    resolved = resolve_weights(cfg.name, weights)
    num_classes = weights_num_classes(resolved, kwargs.pop("num_classes", None))
    model = cls(cfg.depth, cfg.w0, cfg.wa, cfg.wm, cfg.group_width, num_classes=num_classes, rounding=cfg.rule,
                **extra, **kwargs)
    model.config_name = cfg.name
    return apply_weights(model, resolved, progress)


def from_torchvision(tv_model: nn.Module) -> RegNet:
    """The fastregnet RegNet equal to a torchvision RegNet: same architecture, its weights and buffers loaded, in
    its device, dtype and train/eval mode."""
    from .convert import params_from_torchvision

    params = params_from_torchvision(tv_model)
    model = RegNet(params, num_classes=tv_model.fc.out_features)
    ref = next(tv_model.parameters())
    model = model.to(device=ref.device, dtype=ref.dtype)
    model.load_state_dict(tv_model.state_dict())
    return model.train(tv_model.training)
