"""Triton kernels and their launchers; imports only torch and triton. Imported as `fastregnet.kernels`
through the link `fastregnet/kernels -> ../kernels` (source checkout, editable install; a wheel copies the files).

Each module holds `_<op>_kernel` functions (@triton.jit) next to the launcher `<op>(...)` that validates inputs,
allocates outputs, picks tiles and launches.
"""

from .interpreter_compat import patch_scalar_index

patch_scalar_index()  # Triton 3.6's interpreter with numpy >= 2.4 (see interpreter_compat.py)
