"""Models trained by hand on fastinterp's kernels and optimizers (no autograd)."""
from .align import AffineAlign
from .nca import NCA
from .regression import PolynomialRegression

__all__ = ["AffineAlign", "NCA", "PolynomialRegression"]
