"""torchvision's RegNet builders, by the same names and signatures: `regnet_y_400mf(*, weights=None, progress=True,
**kwargs)`. Each builds the model with torchvision's width rounding; `weights` may be a torchvision weights enum or
its name, a path to a saved state_dict, or a state_dict (see `fastregnet.weights`)."""

from __future__ import annotations

from typing import Any

from .models import RegNet, create_model

__all__ = ["regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf",
           "regnet_y_32gf", "regnet_y_128gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf",
           "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf"]


def regnet_y_400mf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_400mf", weights, progress, **kwargs)


def regnet_y_800mf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_800mf", weights, progress, **kwargs)


def regnet_y_1_6gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_1_6gf", weights, progress, **kwargs)


def regnet_y_3_2gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_3_2gf", weights, progress, **kwargs)


def regnet_y_8gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_8gf", weights, progress, **kwargs)


def regnet_y_16gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_16gf", weights, progress, **kwargs)


def regnet_y_32gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_32gf", weights, progress, **kwargs)


def regnet_y_128gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_y_128gf", weights, progress, **kwargs)


def regnet_x_400mf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_400mf", weights, progress, **kwargs)


def regnet_x_800mf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_800mf", weights, progress, **kwargs)


def regnet_x_1_6gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_1_6gf", weights, progress, **kwargs)


def regnet_x_3_2gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_3_2gf", weights, progress, **kwargs)


def regnet_x_8gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_8gf", weights, progress, **kwargs)


def regnet_x_16gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_16gf", weights, progress, **kwargs)


def regnet_x_32gf(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
    return create_model("regnet_x_32gf", weights, progress, **kwargs)
