"""fastinterp: fast interpolation and geometry kernels for machine learning.

NumPy arrays run on compiled CPU kernels (Cython + OpenMP), CuPy and other
CUDA arrays on numba.cuda kernels, and DLPack objects (torch, JAX) zero-copy.

>>> import numpy as np, fastinterp as fi
>>> fi.lerp(np.zeros(2, np.float32), np.ones(2, np.float32), 0.5)
array([0.5, 0.5], dtype=float32)
"""
from ._config import get_num_threads, set_num_threads
from ._dispatch import BackendMismatchError, backend_of
from ._registry import last_kernel
from .blend import lerp, slerp
from .distance import (knn, pairwise_l2, pairwise_l2_backward, pairwise_sqdist,
                       pairwise_sqdist_backward)
from . import ops, plugins
from .plugins import get_include

__version__ = "0.1.0"

__all__ = [
    "BackendMismatchError", "backend_of", "get_include", "get_num_threads", "last_kernel",
    "lerp", "ops", "plugins", "set_num_threads", "slerp",
    "knn", "pairwise_l2", "pairwise_l2_backward", "pairwise_sqdist", "pairwise_sqdist_backward",
]
