"""timm's `pretrained_cfg`: per model name and weight tag ("regnety_004.tv2_in1k"), the preprocessing and head
the weights were trained with, and where the weights come from.

Tags fastregnet knows, per architecture (the same widths and depths, whatever the name):
- "tv2_in1k" / "tv_in1k": torchvision's IMAGENET1K_V2 / V1 weights of the torchvision builder with this
  architecture, with torchvision's preprocessing (resize 232 / 256, center crop 224, bilinear);
- "pycls_in1k": the paper's (pycls) ImageNet weights, as timm hosts them on the Hugging Face hub ("timm/<name>.
  pycls_in1k"), with timm's preprocessing for them (crop 0.875, bicubic).
A name without a tag takes the first available, in that order (torchvision's V2 first, as timm does).
"""

from __future__ import annotations

import functools

from .design import MODEL_CONFIGS, ModelConfig, resolve_name

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TAGS", "split_tag", "torchvision_twin", "available_tags",
           "pretrained_cfg"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TAGS = ("tv2_in1k", "tv_in1k", "pycls_in1k")
_TV_ENUM_MEMBER = {"tv2_in1k": "IMAGENET1K_V2", "tv_in1k": "IMAGENET1K_V1"}
_TV_RESIZE = {"tv2_in1k": 232, "tv_in1k": 256}
_NO_IMAGENET1K = ("regnet_y_128gf",)  # torchvision ships only SWAG weights for it


def split_tag(name: str) -> tuple[str, str | None]:
    """("regnety_004", "tv2_in1k") from "regnety_004.tv2_in1k"; a name without a known tag keeps its dots
    ("RegNetY-1.6GF")."""
    base, dot, tag = str(name).rpartition(".")
    if dot and tag.lower() in TAGS:
        return base, tag.lower()
    return str(name), None


@functools.lru_cache(maxsize=None)
def torchvision_twin(config_name: str) -> str | None:
    """The torchvision builder whose architecture equals this model's, or None."""
    params = MODEL_CONFIGS[config_name].params()
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.rule == "torchvision" and name not in _NO_IMAGENET1K and cfg.params() == params:
            return name
    return None


def available_tags(config: ModelConfig) -> tuple[str, ...]:
    tags = []
    if torchvision_twin(config.name) is not None:
        tags += ["tv2_in1k", "tv_in1k"]
    if config.rule == "pycls":
        tags.append("pycls_in1k")
    return tuple(tags)


def pretrained_cfg(name: str, num_classes: int = 1000, in_chans: int = 3) -> dict:
    """timm's pretrained_cfg for a model name (with or without a tag). `tag` is None for a model without
    ImageNet weights (regnet_y_128gf); its preprocessing fields are then timm's defaults."""
    base, tag = split_tag(name)
    config = resolve_name(base)
    tags = available_tags(config)
    if tag is not None and tag not in tags:
        raise ValueError(f"{base} has no {tag!r} weights; its tags: {', '.join(tags) or 'none'}")
    tag = tag or (tags[0] if tags else None)
    plain = base.lower().removeprefix("timm/")
    architecture = plain if plain in config.aliases else config.name
    cfg = {"architecture": architecture, "tag": tag, "num_classes": num_classes,
           "input_size": (in_chans, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875, "crop_mode": "center",
           "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "first_conv": "stem.0",
           "classifier": "fc", "fixed_input_size": False}
    if tag in _TV_ENUM_MEMBER:
        twin = torchvision_twin(config.name)
        enum_name = "RegNet_" + twin[len("regnet_"):].upper() + "_Weights"
        cfg.update(crop_pct=224 / _TV_RESIZE[tag], interpolation="bilinear", torchvision_builder=twin,
                   weights=f"{enum_name}.{_TV_ENUM_MEMBER[tag]}", origin_url="https://github.com/pytorch/vision")
    elif tag == "pycls_in1k":
        cfg.update(hf_hub_id=f"timm/{architecture}.{tag}", origin_url="https://github.com/facebookresearch/pycls")
    return cfg
