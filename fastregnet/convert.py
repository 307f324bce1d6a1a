"""State-dict compatibility: checking a state_dict against a model, and converting timm and pycls checkpoints to
torchvision's (= fastregnet's) keys, and the RegNetParams of a torchvision RegNet (`params_from_torchvision`, which
`models.from_torchvision` builds from). Imports flow models -> weights -> convert, never back."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["StateDictMismatchError", "check_state_dict", "convert_timm_state_dict", "convert_pycls_state_dict",
           "detect_format", "to_fastregnet_state_dict", "from_torchvision", "params_from_torchvision"]


class StateDictMismatchError(RuntimeError):
    """A state_dict does not fit the model; the message lists missing, unexpected and mis-shaped keys."""


def _list(keys, limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise StateDictMismatchError naming every missing, unexpected and mis-shaped key, or return None."""
    if not isinstance(state_dict, Mapping):
        raise StateDictMismatchError(f"expected a state_dict (a mapping of names to tensors), got "
                                     f"{type(state_dict).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not _bn_fills_in(k, state_dict)]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})" for k, v in state_dict.items()
              if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    not_tensors = [k for k, v in state_dict.items() if k in own and not isinstance(v, torch.Tensor)]
    if missing or unexpected or shapes or not_tensors:
        lines = [f"state_dict does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        if shapes:
            lines.append(f"  mis-shaped keys ({len(shapes)}): {_list(shapes, 10)}")
        if not_tensors:
            lines.append(f"  values that are not tensors ({len(not_tensors)}): {_list(not_tensors)}")
        fmt = detect_format(state_dict)
        if fmt in ("timm", "pycls"):
            lines.append(f"  (this looks like a {fmt} checkpoint: convert it with "
                         f"fastregnet.convert_{fmt}_state_dict first)")
        raise StateDictMismatchError("\n".join(lines))


def _bn_fills_in(key: str, state_dict: Mapping) -> bool:
    """nn.BatchNorm2d loads a checkpoint without `num_batches_tracked` (it starts the count at 0) when the
    checkpoint's metadata version for that module is absent or older than 2, as older PyTorch saved them."""
    prefix, _, name = key.rpartition(".")
    if name != "num_batches_tracked":
        return False
    metadata = getattr(state_dict, "_metadata", None) or {}
    version = metadata.get(prefix, {}).get("version")
    return version is None or version < 2


# timm: s{S}.b{B}.{conv1,conv2,conv3,se,downsample}; stem.conv/bn; head.fc.
_TIMM_BLOCK = {"conv1.conv": "f.a.0", "conv1.bn": "f.a.1", "conv2.conv": "f.b.0", "conv2.bn": "f.b.1",
               "conv3.conv": "f.c.0", "conv3.bn": "f.c.1", "se.fc1": "f.se.fc1", "se.fc2": "f.se.fc2",
               "downsample.conv": "proj.0", "downsample.bn": "proj.1"}
# pycls: s{S}.b{B}.{proj,bn,f.a,f.a_bn,...,f.se.f_ex.0,f.se.f_ex.2}; stem.conv/bn; head.fc.
_PYCLS_BLOCK = {"proj": "proj.0", "bn": "proj.1", "f.a": "f.a.0", "f.a_bn": "f.a.1", "f.b": "f.b.0",
                "f.b_bn": "f.b.1", "f.c": "f.c.0", "f.c_bn": "f.c.1", "f.se.f_ex.0": "f.se.fc1",
                "f.se.f_ex.2": "f.se.fc2"}
_BLOCK_KEY = re.compile(r"^s(\d+)\.b(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_TOP = {"stem.conv": "stem.0", "stem.bn": "stem.1", "head.fc": "fc"}


def _convert(state_dict: Mapping[str, torch.Tensor], block_map: dict[str, str], fmt: str) -> dict:
    out, unknown = {}, []
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m and m.group(3) in block_map:
            s, b, part, leaf = m.groups()
            out[f"trunk_output.block{s}.block{s}-{int(b) - 1}.{block_map[part]}.{leaf}"] = value
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix in _TOP:
            out[f"{_TOP[prefix]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise StateDictMismatchError(f"keys with no place in a RegNet when converting a {fmt} state_dict "
                                     f"({len(unknown)}): {_list(unknown)}")
    return out


def _unwrap(state_dict):
    # Training checkpoints wrap the weights: pycls {"model_state": ...}, others {"state_dict": ...}.
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state_dict, Mapping) and key in state_dict and isinstance(state_dict[key], Mapping):
            return state_dict[key]
    return state_dict


def _require_mapping(state_dict, what: str) -> Mapping:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a {what} state_dict (a mapping of names to tensors), got "
                        f"{type(state_dict).__name__}")
    return state_dict


def convert_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm `regnetx_*` / `regnety_*` state_dict with torchvision's keys (same tensors, renamed)."""
    return _convert(_unwrap(_require_mapping(state_dict, "timm")), _TIMM_BLOCK, "timm")


def convert_pycls_state_dict(state_dict: Mapping[str, torch.Tensor], bgr_to_rgb: bool = True
                             ) -> dict[str, torch.Tensor]:
    """A pycls checkpoint (or its "model_state") with torchvision's keys.

    pycls models were trained on BGR images (its loader reads them with OpenCV). With bgr_to_rgb=True (default) the
    stem conv's input channels are flipped so the converted model takes RGB, normalized as torchvision does;
    pass False to keep the checkpoint's BGR input order.
    """
    out = _convert(_unwrap(_require_mapping(state_dict, "pycls")), _PYCLS_BLOCK, "pycls")
    if bgr_to_rgb and "stem.0.weight" in out:
        out["stem.0.weight"] = out["stem.0.weight"].flip(1)
    return out


def detect_format(state_dict) -> str:
    """'torchvision', 'timm', 'pycls' or 'unknown', from a state_dict's keys."""
    keys = list(_unwrap(state_dict)) if isinstance(state_dict, Mapping) else []
    if any(k.startswith("trunk_output.") for k in keys):
        return "torchvision"
    if any(".conv1.conv." in k for k in keys):
        return "timm"
    if any(".f.a_bn." in k or k.startswith("stem.conv.") for k in keys):
        return "pycls"
    return "unknown"


def to_fastregnet_state_dict(state_dict) -> dict[str, torch.Tensor]:
    """Any supported checkpoint (torchvision, timm, pycls; possibly wrapped) with fastregnet's keys."""
    sd = _unwrap(_require_mapping(state_dict, "torchvision, timm or pycls"))
    fmt = detect_format(sd)
    if fmt == "timm":
        return convert_timm_state_dict(sd)
    if fmt == "pycls":
        return convert_pycls_state_dict(sd)
    return dict(sd)


def params_from_torchvision(tv_model: nn.Module):
    """The RegNetParams of a torchvision RegNet, read off its modules."""
    from .design import RegNetParams, resolve_name

    if isinstance(tv_model, nn.Module) and type(tv_model).__module__.split(".")[0] == "timm":
        # timm's RegNet has another module layout (s1.b1.conv1, ...): its architecture is built by name instead
        name = (getattr(tv_model, "pretrained_cfg", None) or {}).get("architecture")
        if name is not None:
            try:
                resolve_name(name)
            except ValueError:
                raise TypeError(f"expected a torchvision RegNet, got timm's {name} ({type(tv_model).__name__}), "
                                f"which is not one of fastregnet's models (see fastregnet.list_models())") from None
        raise TypeError(f"expected a torchvision RegNet, got timm's {type(tv_model).__name__}; for a timm model "
                        f"build fastregnet.create_model({repr(name) if name else '<its timm name>'}) and load "
                        f"fastregnet.convert_timm_state_dict(timm_model.state_dict()) into it")
    if not isinstance(tv_model, nn.Module) or type(tv_model).__name__ != "RegNet":
        raise TypeError(f"expected a torchvision RegNet (torchvision.models.regnet_*), got "
                        f"{type(tv_model).__name__}")
    try:
        stem_width = tv_model.stem[0].out_channels
        stages = list(tv_model.trunk_output.children())
    except AttributeError as e:
        raise TypeError(f"expected a torchvision RegNet, got {type(tv_model).__name__}") from e
    depths, widths, gws, bms, strides, se_ratio, w_in = [], [], [], [], [], None, stem_width
    for stage in stages:
        blocks = list(stage.children())
        first = blocks[0]
        w_out, w_b = first.f.c[0].out_channels, first.f.a[0].out_channels
        depths.append(len(blocks))
        widths.append(w_out)
        gws.append(w_b // first.f.b[0].groups)
        bms.append(w_b / w_out)
        strides.append(first.f.b[0].stride[0])
        if hasattr(first.f, "se"):
            se_ratio = first.f.se.fc1.out_channels / w_in
        w_in = w_out
    params = RegNetParams(tuple(depths), tuple(widths), tuple(gws), tuple(bms), tuple(strides), se_ratio, stem_width)
    for (width_in, _, _, _, _), stage_block in zip(params.blocks(), [b for s in stages for b in s.children()]):
        if se_ratio and stage_block.f.se.fc1.out_channels != int(round(se_ratio * width_in)):
            raise ValueError("this torchvision model's SE widths do not follow one se_ratio; fastregnet cannot "
                             "rebuild it")
    return params
