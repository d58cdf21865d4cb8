"""numba.cuda kernels. Internal: imported lazily, only when a CUDA array is passed in.

This package is the only place in fastinterp that imports ``numba.cuda``.
"""
