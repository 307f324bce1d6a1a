"""Triton kernels and their launchers; imports only torch and triton. Installed as `fastregnet.kernels`.

Each module holds `_<op>_kernel` functions (@triton.jit) next to the launcher `<op>(...)` that validates inputs,
allocates outputs, picks tiles and launches.
"""
