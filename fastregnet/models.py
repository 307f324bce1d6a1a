"""RegNet models with torchvision's constructors, module names and state_dict keys, plus timm's feature API."""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import pooling
from .design import RegNetParams, check_int, check_real, list_configs, regnet_params, resolve_name
from .features import RegNetFeatures, feature_take_indices
from .inputs import prepare_images
from .layers import AnyStage, NotScriptable, SimpleStemIN
from .stochastic_depth import drop_path_rates

__all__ = ["RegNet", "RegNetY", "RegNetX", "create_model", "list_models"]


def _per_stage(value, n: int, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries but there are {n} stages")
        return tuple(value)
    return (value,) * n


class RegNet(NotScriptable, nn.Module):
    """A RegNet / AnyNet: stem, stages of residual bottleneck blocks, global pool and a linear classifier.

    Build from a `RegNetParams` (as torchvision's `RegNet(block_params)`), or from per-stage lists:
    `RegNet(depths=[1, 3, 6, 6], widths=[48, 104, 208, 440], group_widths=8, se_ratio=0.25)`.
    Scalars for group_widths, bottleneck_multipliers and strides apply to every stage.

    timm's options, all off by default (torchvision's models have none of them): `in_chans` input channels;
    `global_pool` ("avg", "max", "avgmax", "catavgmax" or "" for none, `fastregnet.pooling`); `drop_rate`, dropout
    on the pooled features before the classifier (training only); `drop_path_rate`, stochastic depth with timm's
    linear rule over blocks; `zero_init_last`, every block's last BN gamma starts at 0, so each block begins as
    its shortcut.

    torchvision's `norm_layer` (default BatchNorm2d(eps=1e-5, momentum=0.1); e.g. nn.SyncBatchNorm, or
    torchvision.ops.misc.FrozenBatchNorm2d, which runs fused as an eval BN in every mode) and `activation`
    (default nn.ReLU) build every norm and activation, as in torchvision's RegNet.
    """

    def __init__(self, block_params: RegNetParams | None = None, num_classes: int = 1000, *,
                 depths: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                 group_widths: int | Sequence[int] = 1, bottleneck_multipliers: float | Sequence[float] = 1.0,
                 strides: int | Sequence[int] = 2, se_ratio: float | None = None, stem_width: int = 32,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 zero_init_last: bool = False, norm_layer: Callable[..., nn.Module] | None = None,
                 activation: Callable[..., nn.Module] | None = None):
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
        self.drop_rate = _check_rate("drop_rate", drop_rate)
        self.drop_path_rate = _check_rate("drop_path_rate", drop_path_rate)
        self.block_params = block_params
        self.num_classes = num_classes
        self.in_channels = check_int("in_chans", in_chans, minimum=1)
        activation = activation or nn.ReLU
        self.stem = SimpleStemIN(self.in_channels, block_params.stem_width, norm_layer, activation)
        stages, width = [], block_params.stem_width
        rates = drop_path_rates(self.drop_path_rate, block_params.depths)
        for i, (d, w, g, b, s) in enumerate(block_params.stage_params()):
            stages.append((f"block{i + 1}", AnyStage(width, w, s, d, g, b, block_params.se_ratio, i + 1, rates[i],
                                                     norm_layer, activation)))
            width = w
        self.trunk_output = nn.Sequential(OrderedDict(stages))
        self.num_features = self.head_hidden_size = width
        self.global_pool = _check_head(global_pool, num_classes)
        self.avgpool = pooling.global_pool(global_pool)  # torchvision's name, whatever the pool type
        self.fc = self._new_classifier(num_classes)
        # timm's five feature levels: the stem (stride 2), then each stage
        self.feature_info = [{"num_chs": block_params.stem_width, "reduction": 2, "module": "stem"}] + [
            {"num_chs": w, "reduction": 2 * math.prod(block_params.strides[:i + 1]),
             "module": f"trunk_output.block{i + 1}"} for i, w in enumerate(block_params.widths)]
        self.pretrained_cfg = None  # set by create_model for a named model (timm's pretrained_cfg)
        self._init_weights(zero_init_last)

    @property
    def default_cfg(self) -> dict | None:
        """timm's older name for pretrained_cfg."""
        return self.pretrained_cfg

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        ref = next(self.stem.parameters(), None)  # the stem conv's weight (wrapped or gone after quantization)
        return nn.Linear(pooling.pooled_features(self.global_pool, self.num_features), num_classes,
                         device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)

    def _init_weights(self, zero_init_last: bool = False) -> None:
        # torchvision's (and pycls') ResNet-style init; fan_out ignores groups, as theirs does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):  # torchvision's list
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

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_images(x, self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32)."""
        return self.trunk_output(self.stem(self._prepare(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout (drop_rate, training only) and classifier; with pre_logits=True, the pooled
        features only. With global_pool="" the feature map passes unpooled."""
        x = self.avgpool(x)
        if self.global_pool:
            x = x.flatten(start_dim=1)  # torchvision's call: its fx graph (and FX quantization) is the same
        if self.drop_rate > 0.0:  # functional, so the module tree (and its hooks) stays torchvision's
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise LR decay): the stem, then each stage (coarse) or each block."""
        blocks = r"^trunk_output\.block(\d+)" if coarse else r"^trunk_output\.block(\d+)\.block\d+-(\d+)"
        return {"stem": r"^stem", "blocks": blocks}

    def no_weight_decay(self) -> set[str]:
        """timm's hook for parameters to exempt from weight decay beyond its default rule (1-D tensors: BN and
        biases). RegNet has none (no position embeddings or tokens), as in timm's RegNet."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block in training (torch.utils.checkpoint, non-reentrant): activations are recomputed
        in backward; BatchNorm running statistics are still updated once per forward (`fastregnet.checkpointing`)."""
        for stage in self.trunk_output:
            if isinstance(stage, AnyStage):
                stage.grad_checkpointing = bool(enable)

    @property
    def grad_checkpointing(self) -> bool:
        return any(getattr(stage, "grad_checkpointing", False) for stage in self.trunk_output)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's contract: returns (final features, [feature map of each selected level]). Levels are timm's
        five (`feature_info`): 0 the stem, 1-4 the stages; `indices` None takes all, an int n the last n, a
        sequence those levels (negative from the end). `norm` is accepted for the API (RegNet has no final norm);
        output_fmt "NHWC" permutes the intermediates. stop_early runs no stage past the last selected level."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        taken, last = feature_take_indices(len(self.feature_info), indices)
        x = self.stem(self._prepare(x))
        feats = [x] if 0 in taken else []
        stages = list(self.trunk_output)
        for level, stage in enumerate(stages[:last] if stop_early else stages, start=1):
            x = stage(x)
            if level in taken:
                feats.append(x)
        if output_fmt == "NHWC":
            feats = [f.permute(0, 2, 3, 1) for f in feats]
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's contract: drop the stages after the last level `indices` selects (they become nn.Identity) and,
        with prune_head, the classifier and pooling (reset_classifier(0, "")). As timm, the head goes also when a
        stage went (it was sized for the last stage's features); with every stage kept and prune_head=False the
        model still classifies. Returns the selected levels."""
        taken, last = feature_take_indices(len(self.feature_info), indices)
        pruned = list(self.trunk_output._modules)[last:]
        for name in pruned:
            self.trunk_output._modules[name] = nn.Identity()
        if pruned:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or pruned:
            self.reset_classifier(0, "")
        return taken

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for `num_classes` (0 removes it), and optionally another global pool (timm's
        names, `fastregnet.pooling`)."""
        num_classes = check_int("num_classes", num_classes, minimum=0)
        if global_pool is not None:
            self.global_pool = _check_head(global_pool, num_classes)
            self.avgpool = pooling.global_pool(global_pool)
        else:
            _check_head(self.global_pool, num_classes)
        self.num_classes = num_classes
        self.fc = self._new_classifier(num_classes)
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


def _check_rate(name: str, value: float) -> float:
    value = check_real(name, value, minimum=0.0)
    if value >= 1.0:
        raise ValueError(f"{name} must be < 1, got {value}")
    return value


def _check_head(pool_type: str, num_classes: int) -> str:
    pooling.pooled_features(pool_type, 1)  # validates the name
    if pool_type == "" and num_classes > 0:
        raise ValueError('global_pool="" keeps the feature map unpooled, which a linear classifier cannot take; '
                         'use num_classes=0 (features) or a pooling type')
    return pool_type


class RegNetY(RegNet):
    """RegNetY from its design parameters: depth, w0, wa, wm, group_width; SE ratio 0.25 by default.

    `rounding` picks how stage widths are made divisible by the group width: "pycls" (the paper's models) or
    "torchvision" (torchvision's builders). Keyword options (in_chans, global_pool, drop_rate, drop_path_rate,
    zero_init_last) as for `RegNet`.
    """

    def __init__(self, depth: int, w0: int, wa: float, wm: float, group_width: int, se_ratio: float | None = 0.25,
                 bottleneck_multiplier: float = 1.0, num_classes: int = 1000, rounding: str = "pycls",
                 stem_width: int = 32, **options: Any):
        params = regnet_params(depth, w0, wa, wm, group_width, bottleneck_multiplier, se_ratio, rounding, stem_width)
        super().__init__(params, num_classes, **options)


class RegNetX(RegNetY):
    """RegNetX: RegNetY without Squeeze-and-Excitation."""

    def __init__(self, depth: int, w0: int, wa: float, wm: float, group_width: int,
                 bottleneck_multiplier: float = 1.0, num_classes: int = 1000, rounding: str = "pycls",
                 stem_width: int = 32, **options: Any):
        super().__init__(depth, w0, wa, wm, group_width, None, bottleneck_multiplier, num_classes, rounding,
                         stem_width, **options)


def list_models(pattern: str | None = None) -> list[str]:
    """Canonical names: the 15 torchvision builders, then the 24 pycls models. `pattern` is a glob, e.g. '*y*'."""
    return list_configs(pattern)


# timm's act_layer names; each block builds its activations with inplace=True, which those without it ignore
ACT_LAYERS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "celu": nn.CELU,
              "selu": nn.SELU, "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "hard_swish": nn.Hardswish,
              "hardswish": nn.Hardswish, "hard_sigmoid": nn.Hardsigmoid, "hardsigmoid": nn.Hardsigmoid,
              "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
# timm's feature_cls values: how timm builds a features_only model; fastregnet's RegNetFeatures gives each one's
# output (a list of the levels' maps, or for "dict" an OrderedDict keyed "0".."4" as timm's FeatureDictNet)
FEATURE_CLASSES = (None, "list", "hook", "getter", "fx", "dict")


def _build_without_inplace(cls: type, inplace: bool = False) -> nn.Module:
    return cls()


def _activation(act_layer: Any) -> Callable[..., nn.Module]:
    """timm's act_layer (a name or an nn.Module class) as a constructor that takes inplace= (as timm's
    create_act_layer: classes without it, e.g. nn.GELU, are built without it)."""
    if isinstance(act_layer, str):
        if act_layer.lower() not in ACT_LAYERS:
            raise ValueError(f"unknown act_layer {act_layer!r}; fastregnet builds {', '.join(ACT_LAYERS)} (or pass "
                             f"an nn.Module class)")
        act_layer = ACT_LAYERS[act_layer.lower()]
    if not callable(act_layer):
        raise TypeError(f"act_layer must be a name or an nn.Module class, got {type(act_layer).__name__}")
    try:
        params = inspect.signature(act_layer).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass inplace as torchvision does
        return act_layer
    if any(p.name == "inplace" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return act_layer
    return functools.partial(_build_without_inplace, act_layer)


def _feature_options(feature_cls: Any, feature_cfg: dict | None, out_indices: Any) -> tuple[bool, Any]:
    """(as_dict, out_indices) from timm's feature_cls, feature_cfg and out_indices: as in timm, the keyword
    arguments overwrite feature_cfg's entries."""
    cfg = dict(feature_cfg or {})
    unknown = set(cfg) - {"feature_cls", "out_indices"}
    if unknown:
        raise TypeError(f"feature_cfg keys {sorted(unknown)} are not supported; fastregnet takes feature_cls and "
                        f"out_indices")
    if feature_cls is not None:
        cfg["feature_cls"] = feature_cls
    if out_indices is not None:
        cfg["out_indices"] = out_indices
    feature_cls = cfg.get("feature_cls")
    if isinstance(feature_cls, str):
        feature_cls = feature_cls.lower()
    if feature_cls not in FEATURE_CLASSES:
        raise ValueError(f"unknown feature_cls {cfg.get('feature_cls')!r}; expected one of "
                         f"{', '.join(repr(c) for c in FEATURE_CLASSES)}")
    return feature_cls == "dict", cfg.get("out_indices", (0, 1, 2, 3, 4))


def create_model(name: str, weights: Any = None, progress: bool = True, *, pretrained: bool = False,
                 features_only: bool = False, out_indices: int | Sequence[int] | None = None,
                 feature_cls: str | None = None, feature_cfg: dict | None = None, act_layer: Any = None,
                 **kwargs: Any) -> RegNet | RegNetFeatures:
    """Build a model by torchvision ("regnet_y_400mf"), pycls ("RegNetY-400MF") or timm ("regnety_004", tagged
    "regnety_004.tv2_in1k") name.

    `weights` as for the builders (`fastregnet.weights`: strict, as torchvision); or timm's `pretrained=True`,
    the weights of the name's tag (`fastregnet.pretrained`), with timm's rules: a different num_classes gets a
    fresh classifier. Either way in_chans != 3 adapts the stem conv as timm does. `features_only=True` returns a
    `RegNetFeatures` for `out_indices` (timm's five levels, default all); timm's `feature_cls` ("list", "hook",
    "getter", "fx": a list; "dict": an OrderedDict keyed by level) and `feature_cfg` (its feature_cls and
    out_indices, which the keyword arguments overwrite) as timm.
    `act_layer` (timm's name, e.g. "silu", or an nn.Module class) builds every activation, the SE's included.
    Other kwargs go to the constructor (num_classes, in_chans, global_pool, drop_rate, drop_path_rate,
    zero_init_last, norm_layer, activation).
    """
    from .pretrained import pretrained_cfg, split_tag
    from .weights import apply_weights, pretrained_weights, resolve_weights, weights_num_classes

    as_dict, out_indices = _feature_options(feature_cls, feature_cfg, out_indices)
    if (feature_cls is not None or feature_cfg) and not features_only:
        raise ValueError("feature_cls and feature_cfg configure a features_only model; add features_only=True")
    if act_layer is not None:
        if kwargs.get("activation") is not None:
            raise ValueError("give either act_layer (timm's name) or activation (torchvision's), not both")
        kwargs["activation"] = _activation(act_layer)
    base, _ = split_tag(name)
    cfg = resolve_name(base)
    cls = RegNetY if cfg.se_ratio else RegNetX
    extra = {"se_ratio": cfg.se_ratio} if cls is RegNetY else {}
    if pretrained and weights is not None:
        raise ValueError("give either weights= (a checkpoint, state_dict or torchvision enum) or pretrained=True "
                         "(the tag's weights), not both")
    tag_cfg = pretrained_cfg(name)
    if pretrained:
        if tag_cfg["tag"] is None:
            raise ValueError(f"{name} has no ImageNet-1k weights fastregnet can load")
        resolved = ("state_dict", pretrained_weights(tag_cfg, progress))
        num_classes = kwargs.pop("num_classes", 1000)
    else:
        resolved = resolve_weights(cfg.name, weights)
        num_classes = weights_num_classes(resolved, kwargs.pop("num_classes", None))
    model = cls(cfg.depth, cfg.w0, cfg.wa, cfg.wm, cfg.group_width, num_classes=num_classes, rounding=cfg.rule,
                **extra, **kwargs)
    model.config_name = cfg.name
    model.pretrained_cfg = pretrained_cfg(name, model.num_classes, model.in_channels)
    model = apply_weights(model, resolved, progress, fresh_classifier=pretrained)
    if features_only:
        return RegNetFeatures(model, out_indices, as_dict=as_dict)
    return model


def from_torchvision(tv_model: nn.Module) -> RegNet:
    """The fastregnet RegNet equal to a torchvision RegNet: same architecture, its weights and buffers loaded, in
    its device, dtype and train/eval mode."""
    from .convert import params_from_torchvision

    params = params_from_torchvision(tv_model)
    fc = getattr(tv_model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"this torchvision RegNet's fc is {type(fc).__name__}, not an nn.Linear, so its number of "
                        f"classes is unknown; convert the model before replacing its head (then replace the "
                        f"converted model's fc), or build it with fastregnet and load its state_dict")
    model = RegNet(params, num_classes=fc.out_features)
    ref = next(tv_model.parameters())
    model = model.to(device=ref.device, dtype=ref.dtype)
    model.load_state_dict(tv_model.state_dict())
    return model.train(tv_model.training)
