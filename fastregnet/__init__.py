"""fastregnet: a drop-in, Triton-fused RegNetY/RegNetX for PyTorch, and the RegNet design-space tools."""

from .backend import count_kernel_launches, get_backend, set_backend, use_backend
from .complexity import count_complexity, stage_complexity
from .convert import StateDictMismatchError, check_state_dict, convert_pycls_state_dict, convert_timm_state_dict
from .fusion import explain_fusion
from .graphs import CUDAGraphInference, cuda_graph_inference
from .design import MODEL_CONFIGS, RegNetParams, generate_widths, regnet_params, resolve_name
from .models import RegNet, RegNetX, RegNetY, create_model, from_torchvision, list_models
from .zoo import *  # noqa: F401,F403  (the torchvision-named builders)
from .zoo import __all__ as _builders

from .registry import register as _register

__version__ = "0.1.0"
_register()  # torchvision.models.get_model / timm.create_model("fastregnet_...") after `import fastregnet`

__all__ = ["RegNet", "RegNetY", "RegNetX", "RegNetParams", "create_model", "list_models", "from_torchvision",
           "convert_timm_state_dict", "convert_pycls_state_dict", "check_state_dict", "StateDictMismatchError",
           "count_complexity", "stage_complexity", "generate_widths", "regnet_params", "resolve_name",
           "MODEL_CONFIGS", "get_backend", "set_backend", "use_backend", "count_kernel_launches", "explain_fusion",
           "cuda_graph_inference", "CUDAGraphInference", *_builders]
