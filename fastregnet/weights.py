"""What a builder's `weights=` may be, and how it is loaded.

- a torchvision weights enum (`RegNet_Y_400MF_Weights.IMAGENET1K_V2`) or its name ("IMAGENET1K_V2", "DEFAULT",
  "RegNet_Y_400MF_Weights.IMAGENET1K_V2"): fetched through torchvision's own loader (needs torchvision and a
  network, or torch hub's cache); torchvision builders only;
- a path to a saved state_dict (torch.save), in torchvision, timm or pycls format;
- a state_dict (a mapping of names to tensors), in any of those formats.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .convert import to_fastregnet_state_dict

__all__ = ["resolve_weights", "load_weights", "apply_weights", "weights_num_classes", "torchvision_weights_enum",
           "pretrained_weights", "adapt_input_conv"]


def torchvision_weights_enum(config_name: str):
    """torchvision's weights enum class for a torchvision builder name, e.g. RegNet_Y_400MF_Weights."""
    if not config_name.startswith("regnet_"):
        raise ValueError(f"{config_name} is not a torchvision model; torchvision weights exist only for the "
                         f"torchvision builders (fastregnet.list_models('regnet_*'))")
    try:
        import torchvision.models as tvm
    except ImportError as e:
        raise ImportError("loading torchvision weights by name needs torchvision installed") from e
    enum_name = "RegNet_" + config_name[len("regnet_"):].upper() + "_Weights"
    return getattr(tvm, enum_name)


def _is_torchvision_enum(weights) -> bool:
    return type(weights).__module__.startswith("torchvision") and hasattr(weights, "get_state_dict")


# A string with one of these endings, or a directory separator, names a file, never a weights enum member.
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pyth", ".pkl", ".bin", ".ckpt", ".tar", ".safetensors")


def _load_checkpoint(path: str) -> Mapping:
    if os.path.isdir(path):
        raise ValueError(f"weights path {path!r} is a directory, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"weights file {path!r} is empty")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load's errors for a non-checkpoint differ by content and version
        raise ValueError(f"weights file {path!r} is not a PyTorch checkpoint that torch.load(weights_only=True) "
                         f"reads ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"weights file {path!r} holds a {type(checkpoint).__name__}, not a state_dict")
    return checkpoint


def _check_enum_for(config_name: str, weights) -> None:
    """A torchvision weights enum must be this model's, checked by name before anything is downloaded."""
    enum_cls = torchvision_weights_enum(config_name)
    if type(weights).__name__ != enum_cls.__name__:
        raise ValueError(f"weights {type(weights).__name__}.{weights.name} are for another model; {config_name} "
                         f"takes {enum_cls.__name__} ({', '.join(enum_cls.__members__)})")


def resolve_weights(config_name: str, weights: Any):
    """(kind, value): ('enum', torchvision weights), ('state_dict', mapping) or ('none', None)."""
    if weights is None or weights is False:
        return "none", None
    if _is_torchvision_enum(weights):
        _check_enum_for(config_name, weights)
        return "enum", weights
    if isinstance(weights, Mapping):
        return "state_dict", weights
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if os.path.exists(path):
            return "state_dict", _load_checkpoint(path)
        if os.sep in path or (os.altsep and os.altsep in path) or path.lower().endswith(_CHECKPOINT_SUFFIXES):
            raise FileNotFoundError(f"weights file {path!r} does not exist")
        enum_cls = torchvision_weights_enum(config_name)
        name = path.split(".")[-1]
        if path.count(".") == 1 and path.split(".")[0] != enum_cls.__name__:
            raise ValueError(f"weights {path!r} are for another model than {config_name} ({enum_cls.__name__})")
        try:
            return "enum", enum_cls[name]
        except KeyError:
            raise ValueError(f"weights {path!r} is neither an existing file nor a {enum_cls.__name__} member "
                             f"({', '.join(enum_cls.__members__)})") from None
    raise TypeError(f"weights must be None, a torchvision weights enum or name, a path or a state_dict; got "
                    f"{type(weights).__name__}")


def weights_num_classes(resolved: tuple[str, Any], num_classes: int | None) -> int:
    """The classifier size: from the weights when they fix it (and then num_classes must agree), else 1000."""
    kind, value = resolved
    fixed = None
    if kind == "enum":
        fixed = len(value.meta["categories"])
    elif kind == "state_dict":
        fc = to_fastregnet_state_dict(value).get("fc.weight")
        fixed = fc.shape[0] if fc is not None else None
    if fixed is not None and num_classes is not None and num_classes != fixed:
        raise ValueError(f"num_classes={num_classes} but the weights have {fixed} classes")
    return num_classes if num_classes is not None else (fixed if fixed is not None else 1000)


def load_weights(resolved: tuple[str, Any], progress: bool = True) -> dict[str, torch.Tensor] | None:
    """The state_dict (fastregnet keys) of resolved weights, or None."""
    kind, value = resolved
    if kind == "none":
        return None
    if kind == "enum":
        value = value.get_state_dict(progress=progress, check_hash=True)
    return to_fastregnet_state_dict(value)


def pretrained_weights(cfg: dict, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state_dict (fastregnet keys) of a pretrained_cfg's tag: torchvision's weights through torchvision, the
    pycls weights through timm's hub loader (both need those packages and a network or their caches)."""
    if "weights" in cfg:
        member = cfg["weights"].split(".")[1]
        state_dict = torchvision_weights_enum(cfg["torchvision_builder"])[member].get_state_dict(
            progress=progress, check_hash=True)
    else:
        try:
            import timm
        except ImportError as e:
            raise ImportError(f"the {cfg['tag']} weights of {cfg['architecture']} come from the Hugging Face hub "
                              f"through timm; install timm, or pass weights= a saved checkpoint") from e
        state_dict = timm.create_model(f"{cfg['architecture']}.{cfg['tag']}", pretrained=True).state_dict()
    return to_fastregnet_state_dict(state_dict)


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's rule for a 3-channel stem conv on in_chans channels: summed for 1, else the RGB filters tiled and
    scaled by 3 / in_chans (so a constant image gives the same activations for 1 channel or a multiple of 3)."""
    dtype = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:
        repeat = -(-in_chans // 3)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return weight.to(dtype)


def apply_weights(model, resolved: tuple[str, Any], progress: bool = True, fresh_classifier: bool = False):
    """Load resolved weights into `model` (strict: every key must match) and return the model. A model with
    in_chans != 3 gets the stem conv adapted (`adapt_input_conv`); with fresh_classifier (timm's pretrained=True)
    a classifier of another shape keeps the model's own fresh one."""
    state_dict = load_weights(resolved, progress)
    if state_dict is None:
        return model
    state_dict = dict(state_dict)
    stem = state_dict.get("stem.0.weight")
    if stem is not None and stem.shape[1] == 3 and model.in_channels != 3:
        state_dict["stem.0.weight"] = adapt_input_conv(stem, model.in_channels)
    if fresh_classifier:
        own = {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
        theirs = {k: v for k, v in state_dict.items() if k.startswith("fc.")}
        if {k: v.shape for k, v in own.items()} != {k: v.shape for k, v in theirs.items()}:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")} | own
    model.load_state_dict(state_dict)
    return model
