"""fastinterp: fast interpolation and geometry kernels for machine learning.

NumPy arrays run on compiled CPU kernels (Cython + OpenMP), CuPy and other
CUDA arrays on numba.cuda kernels, and DLPack objects (torch, JAX) zero-copy.

>>> import numpy as np, fastinterp as fi
>>> fi.lerp(np.zeros(2, np.float32), np.ones(2, np.float32), 0.5)
array([0.5, 0.5], dtype=float32)
"""
from ._build import require_built_kernels as _require_built_kernels

_require_built_kernels()

from ._config import get_num_threads, set_num_threads, show_config
from ._dispatch import BackendMismatchError, backend_of
from ._memory import output_cache_info, set_output_cache
from ._registry import last_kernel
from .blend import lerp, slerp, slerp_backward
from .distance import (knn, pairwise_l2, pairwise_l2_backward, pairwise_sqdist,
                       pairwise_sqdist_backward)
from .sample import affine_grid, affine_grid_backward, grid_sample, grid_sample_backward
from .resize import (adaptive_avg_pool1d, adaptive_avg_pool1d_backward, adaptive_avg_pool2d,
                     adaptive_avg_pool2d_backward, adaptive_avg_pool3d,
                     adaptive_avg_pool3d_backward, interpolate, resize, resize_backward)
from .warp import (rotate, rotation_matrix, warp_affine, warp_affine_backward,
                   warp_perspective, warp_perspective_backward)
from . import ops, plugins
from .plugins import get_include
from . import optim
from .optim import SGD, Adam, AdamW

__version__: str = "0.1.0"

__all__ = [
    # infrastructure
    "BackendMismatchError", "backend_of", "get_num_threads", "last_kernel", "output_cache_info",
    "set_num_threads", "set_output_cache", "show_config",
    # blend
    "lerp", "slerp", "slerp_backward",
    # sample
    "affine_grid", "affine_grid_backward", "grid_sample", "grid_sample_backward",
    # warp
    "rotate", "rotation_matrix", "warp_affine", "warp_affine_backward", "warp_perspective",
    "warp_perspective_backward",
    # plugins
    "get_include", "ops", "plugins",
    # distance
    "knn", "pairwise_l2", "pairwise_l2_backward", "pairwise_sqdist", "pairwise_sqdist_backward",
    # resize
    "resize", "interpolate", "resize_backward", "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward", "adaptive_avg_pool1d", "adaptive_avg_pool1d_backward",
    "adaptive_avg_pool3d", "adaptive_avg_pool3d_backward",
    # optim
    "Adam", "AdamW", "SGD", "optim",
]
