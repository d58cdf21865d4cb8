"""fastinterp on Dask arrays: the same op names, taking and returning ``dask.array.Array``.

Nothing is computed until ``.compute()`` (or ``dask.compute``, ``persist``);
every result carries the right ``chunks``, ``dtype`` and ``meta``, so graphs
compose with the caller's own Dask code and run on any scheduler: the
synchronous or threaded one, or a ``dask.distributed`` cluster (local or
remote: ``Client("tcp://scheduler:8786")`` makes it the default).

Three kinds of ops:

- batch-chunked (chunks along axis 0, the batch N; other axes are rechunked
  to one chunk): ``grid_sample``, ``affine_grid``, ``resize``,
  ``adaptive_avg_pool2d``, ``lerp`` (any chunks), ``slerp`` and the backward
  functions. One task per block calls the in-memory op: bit-identical.
- spatially chunked images (chunks along H and W too, NCHW or NHWC):
  ``resize`` (every mode, antialias included), ``adaptive_avg_pool2d`` and
  their backwards read exactly the halo each output chunk needs and equal
  the in-memory op bit for bit; ``grid_sample`` reads only the source blocks
  each output block touches (see :func:`grid_sample`).
- distances: ``pairwise_sqdist`` / ``pairwise_l2`` over row-chunked x and y
  (a 2-D chunked result) and ``knn`` (per-block exact top-k merged by a tree
  reduction), identical to the in-memory results.

On a cluster, keep data where it is computed: a NumPy array wrapped by
``da.from_array`` sits whole in one task (one worker) and its blocks are
copied to the others, so load from storage (``da.from_zarr``: each worker
reads its own blocks inside the tasks that use them) or ``client.persist``
the input first. Workers started by ``distributed`` run fastinterp, OpenMP
and BLAS on one thread each (``OMP_NUM_THREADS=1``, read at import), so
``n_workers x threads_per_worker`` tasks share the cores without
oversubscribing them. distributed also starts workers with
``MALLOC_TRIM_THRESHOLD_=65536``, under which every large allocation is
mapped afresh (page faults and zeroing): image ops in workers then take up
to twice the CPU time of the same call in the client; leaving the variable
out of ``distributed.nanny.pre-spawn-environ`` trades that for memory kept
by the allocator.

Importing :mod:`fastinterp` does not import Dask; this module does.
"""
from __future__ import annotations

from ._ops import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, affine_grid,
                   affine_grid_backward, grid_sample, grid_sample_backward, interpolate, lerp,
                   resize, resize_backward, rotate, slerp, slerp_backward, warp_affine,
                   warp_perspective)
from ._knn import knn, pairwise_l2, pairwise_sqdist

__all__ = ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "affine_grid",
           "affine_grid_backward", "grid_sample", "grid_sample_backward", "interpolate", "knn",
           "lerp", "pairwise_l2", "pairwise_sqdist", "resize", "resize_backward", "rotate",
           "slerp", "slerp_backward", "warp_affine", "warp_perspective"]
