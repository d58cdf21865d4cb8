"""Models trained by hand on fastinterp's kernels and optimizers (no autograd)."""
from .nca import NCA
from .regression import PolynomialRegression

__all__ = ["NCA", "PolynomialRegression"]
