"""fastregnet's models in torchvision's and timm's model registries, so their training scripts can select them:

    import fastregnet
    torchvision.models.get_model("fastregnet_regnet_y_400mf", weights=None)
    timm.create_model("fastregnet_regnety_004", pretrained=False, num_classes=10)

Every name carries the "fastregnet_" prefix, so none can shadow torchvision's or timm's own models. `import
fastregnet` registers with whichever of the two libraries is installed (`register()`; importing them is what it
costs); a name already registered is left as it is.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

from .design import MODEL_CONFIGS
from .models import RegNet, RegNetFeatures, create_model

__all__ = ["PREFIX", "register", "torchvision_names", "timm_names"]

PREFIX = "fastregnet_"


def torchvision_names() -> list[str]:
    """The registered torchvision names: the prefix and each torchvision builder's name."""
    return [PREFIX + c.name for c in MODEL_CONFIGS.values() if c.rule == "torchvision"]


def timm_names() -> list[str]:
    """The registered timm names: the prefix and each timm name fastregnet resolves (regnety_004, regnetx_004_tv)."""
    return sorted(PREFIX + a for c in MODEL_CONFIGS.values() for a in c.aliases)


def _torchvision_builder(name: str):
    def builder(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
        return create_model(name, weights, progress, **kwargs)

    builder.__name__ = builder.__qualname__ = PREFIX + name
    builder.__doc__ = f"fastregnet's {name}, with torchvision's builder signature (fastregnet.{name})."
    return builder


def _timm_entrypoint(name: str):
    def entrypoint(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
                   cache_dir: Any = None, **kwargs: Any) -> RegNet | RegNetFeatures:
        # timm.create_model passes a tag ("regnety_004.tv2_in1k") as pretrained_cfg; fastregnet's own tags are
        # names too, and a pretrained config object or overlay cannot be honoured
        tag = pretrained_cfg if isinstance(pretrained_cfg, str) else None
        if (pretrained_cfg is not None and tag is None) or pretrained_cfg_overlay:
            raise TypeError(f"{PREFIX}{name}: pretrained_cfg objects and pretrained_cfg_overlay are not supported; "
                            f"give a tag in the name ('{PREFIX}{name}.<tag>') or load weights with checkpoint_path")
        return create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = PREFIX + name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"fastregnet's {name} for timm.create_model (fastregnet.create_model({name!r}, ...))."
    return entrypoint


def _register_torchvision() -> None:
    from torchvision.models import _api

    for c in MODEL_CONFIGS.values():
        if c.rule == "torchvision" and PREFIX + c.name not in _api.BUILTIN_MODELS:
            _api.BUILTIN_MODELS[PREFIX + c.name] = _torchvision_builder(c.name)


def _register_timm() -> None:
    from timm.models import is_model, register_model

    for c in MODEL_CONFIGS.values():
        for alias in c.aliases:
            if not is_model(PREFIX + alias):
                fn = _timm_entrypoint(alias)
                globals()[fn.__name__] = fn  # timm looks the entrypoint up in its module
                register_model(fn)


def register() -> list[str]:
    """Register with torchvision and timm where installed; the libraries registered with."""
    done = []
    for library, register_with in (("torchvision", _register_torchvision), ("timm", _register_timm)):
        if importlib.util.find_spec(library) is None:
            continue
        try:
            register_with()
        except (ImportError, AttributeError) as e:  # a broken or much older install must not break `import fastregnet`
            warnings.warn(f"fastregnet: not registered with {library} ({type(e).__name__}: {e})", stacklevel=2)
        else:
            done.append(library)
    return done
