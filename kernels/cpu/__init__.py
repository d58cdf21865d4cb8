"""Compiled CPU kernels (Cython + OpenMP). Internal: call the public API in fastinterp."""
