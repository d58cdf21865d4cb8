"""Models trained by hand on fastinterp's kernels (no autograd)."""
from .align import AffineAlign

__all__ = ["AffineAlign"]
