"""ReLU and its gradient mask for kernel epilogues, with PyTorch's NaN semantics.

`tl.maximum(x, 0.0)` lowers to maxnum, which maps NaN to 0: a NaN in one image would vanish from the logits while
the BatchNorm statistics turned NaN. torch.relu keeps NaN, and its backward (threshold_backward) zeroes the grad
only where the output is <= 0, so a NaN output passes its grad through. These two helpers say exactly that.
"""

import triton
import triton.language as tl


@triton.jit
def relu(x):
    """max(x, 0) that keeps NaN (NaN < 0 is false)."""
    return tl.where(x < 0, 0.0, x)


@triton.jit
def relu_grad(grad, out):
    """grad where ReLU's output (or its input: same sign) is not <= 0, else 0; NaN outputs pass the grad."""
    return tl.where(out <= 0, 0.0, grad)
