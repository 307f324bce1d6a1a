"""fastregnet's models in torchvision's and timm's model registries, so their training scripts can select them:

    import fastregnet
    torchvision.models.get_model("fastregnet_regnet_y_400mf", weights=None)
    timm.create_model("fastregnet_regnety_004", pretrained=False, num_classes=10)

Every name carries the "fastregnet_" prefix, so none can shadow torchvision's or timm's own models. `import
fastregnet` registers with each library when it is imported, before or after fastregnet (`register()`), and imports
neither itself; a name already registered is left as it is.
"""

from __future__ import annotations

import importlib.abc
import inspect
import sys
import warnings
from typing import Any, Optional

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


class _TorchvisionBuilder:
    """fastregnet's builder for a torchvision name, with torchvision's builder signature. Its `weights` is annotated
    with torchvision's own weights enum (fastregnet loads those), read when the signature is asked for, so that
    torchvision.models.get_model_weights works; torchvision.models.regnet is fully imported by then."""

    def __init__(self, name: str):
        self.config_name = name
        self.__name__ = self.__qualname__ = PREFIX + name
        self.__doc__ = f"fastregnet's {name}, with torchvision's builder signature (fastregnet.{name})."

    def __call__(self, *, weights: Any = None, progress: bool = True, **kwargs: Any) -> RegNet:
        return create_model(self.config_name, weights, progress, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        from .weights import torchvision_weights_enum

        keyword = inspect.Parameter.KEYWORD_ONLY
        return inspect.Signature([
            inspect.Parameter("weights", keyword, default=None,
                              annotation=Optional[torchvision_weights_enum(self.config_name)]),
            inspect.Parameter("progress", keyword, default=True, annotation=bool),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD, annotation=Any)], return_annotation=RegNet)


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


def _register_torchvision(api) -> None:
    """Into torchvision.models._api's BUILTIN_MODELS, which get_model and list_models read."""
    for c in MODEL_CONFIGS.values():
        if c.rule == "torchvision" and PREFIX + c.name not in api.BUILTIN_MODELS:
            api.BUILTIN_MODELS[PREFIX + c.name] = _TorchvisionBuilder(c.name)


def _register_timm(registry) -> None:
    """Through timm.models._registry's register_model, which create_model and list_models read."""
    for c in MODEL_CONFIGS.values():
        for alias in c.aliases:
            if not registry.is_model(PREFIX + alias):
                fn = _timm_entrypoint(alias)
                globals()[fn.__name__] = fn  # timm looks the entrypoint's module up by fn.__module__
                registry.register_model(fn)


# each library's registry module, and how to register into it
_REGISTRIES = {"torchvision.models._api": ("torchvision", _register_torchvision),
               "timm.models._registry": ("timm", _register_timm)}
_pending: set[str] = set()  # registry modules not imported yet
_finding: set[str] = set()  # registry modules whose spec is being looked up


def _register_into(module_name: str, module) -> None:
    library, register_with = _REGISTRIES[module_name]
    try:
        register_with(module)
    except Exception as e:  # a much older or newer library must not fail its own import because of fastregnet
        warnings.warn(f"fastregnet: not registered with {library} ({type(e).__name__}: {e})", stacklevel=2)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Registers with torchvision or timm right after the library's registry module is first imported, so that
    `import fastregnet` imports neither of them (nor triton, which torchvision imports: the GPU campaign's dry run
    must set TRITON_INTERPRET before triton is imported) and the import order does not matter. It finds the module
    with the other finders and wraps that spec's own loader's exec_module."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending or fullname in _finding:
            return None
        _finding.add(fullname)  # the other finders are asked below: never ask this one (or a twin) again
        try:
            for finder in sys.meta_path:
                if isinstance(finder, _RegisterOnImport) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _finding.discard(fullname)
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            warnings.warn(f"fastregnet: not registered with {_REGISTRIES[fullname][0]} ({fullname}'s loader "
                          f"{type(loader).__name__} has no exec_module)", stacklevel=2)
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            # (a loader shared by several modules runs this for each: register after the registry module only)
            if module.__name__ == fullname and fullname in _pending:
                _pending.discard(fullname)
                _register_into(fullname, module)

        loader.exec_module = exec_then_register
        return spec


def register() -> None:
    """Register with torchvision and timm: now for a library already imported, else when it is first imported."""
    for module_name in _REGISTRIES:
        if module_name in sys.modules:
            _register_into(module_name, sys.modules[module_name])
        else:
            _pending.add(module_name)
    if _pending and not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
