"""The op table: one record per public op (in the spirit of SciPy's ``MetricInfo``
and PyTorch's ``OpInfo``).

A record says how to call an op, which kernels it runs on which backends and
dtypes, which of its arguments are float arrays, whether it takes ``out=`` and
which inputs ``out`` may be exactly, how to make small random valid inputs,
and what the right answer is: a float64 NumPy reference written for the table
(slow, obvious code) and, where PyTorch has the op, a torch reference used
when torch is installed. The generated test matrix (tests/test_op_matrix.py)
runs every record through special values, empty axes, strides, read-only and
aliased arrays, torch views, wrong dtypes, threads and ``out=`` misuse; a new
op gets all of that by adding its record here.

Special values. Each record's ``special`` says what its result must do when
an input holds NaN, +-inf, a huge finite value or a subnormal:

``"class"``
    every output element has the reference's class (finite, NaN, +inf, -inf);
``"finite"``
    the output is finite exactly where the reference is finite;
``None``
    only: no crash and no exception other than a documented ValueError/TypeError.

The NumPy reference defines the expected pattern; it computes in float64 and
rounds to the op's dtype (so a float32 result that overflows is +-inf), and a
tap or term whose weight is structurally zero (outside a filter's support)
never contributes, so an inf there cannot turn into 0 * inf = NaN.
``special_args`` restricts the contract to some arguments (others only must
not crash).
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ._validate import broadcast_shapes

__all__ = ["OpRecord", "Sample", "records", "record", "outputs", "torch_or_none",
           "NOT_OPS", "HALF", "np_dtype", "compute_dtype"]

FLOATS = ("float32", "float64")
HALF = ("float16", "bfloat16")   # storage only: computed in float32 (fastinterp._half)
BOTH = ("cpu", "cuda")
# Half-precision results are the float32 result rounded once: a relative error of at most
# 2**-11 (float16) or 2**-8 (bfloat16) of each value, plus the float32 arithmetic's own.
HALF_TOL = {"float16": (1e-3, 1e-3), "bfloat16": (8e-3, 8e-3)}

# Public names of fastinterp.__all__ that compute nothing (infrastructure).
NOT_OPS = frozenset({"BackendMismatchError", "backend_of", "get_num_threads", "last_kernel",
                     "output_cache_info", "set_num_threads", "set_output_cache", "show_config",
                     "get_include", "ops", "plugins", "optim", "rotation_matrix"})


@dataclass
class Sample:
    """The arguments of one call: ``args`` (arrays and the like, by name) and
    ``kwargs`` (options that stay fixed)."""

    args: dict
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpRecord:
    """One public op.

    Attributes
    ----------
    name : str
        The public name (``fastinterp.<name>``, or ``models.nca.<name>``).
    fn : callable
        Called as ``fn(**sample.args, **sample.kwargs[, out=out])``.
    kernels : tuple of str
        Registry op names it runs; each is registered for every backend and for
        every dtype of ``dtypes`` that is not storage only (``HALF``).
    dtypes : tuple of str
        The dtypes it accepts. float16 and bfloat16 (``HALF``) are storage
        dtypes, CPU only: the dispatcher computes them with the float32 kernels.
    float_args : tuple of str
        The float array arguments (those the matrix varies).
    dims : dict
        Default sizes of the sample; ``large`` the sizes for the thread tests.
    make : callable
        ``make(rng, dtype, dims) -> Sample``: random valid inputs of ``dims``.
    ref_numpy : callable
        ``ref_numpy(sample) -> tuple of float64 arrays``.
    ref_torch : callable or None
        The same with torch (float64), used when torch is installed.
    backward : str or None
        The name of the backward's record.
    takes_out : bool
        ``out=`` accepted (single-output ops).
    out_alias : tuple of str
        Inputs that ``out`` may be exactly (element-wise ops): the result is
        as if out were separate. For others an exactly aliased out either
        works or raises a clear error; partial overlap always raises.
    empty : dict
        Case id -> dims with a zero-size axis; the result must equal the
        reference's (an empty array, zeros, ...) or, where the reference
        raises ValueError, a ValueError.
    special, special_args
        The special-value contract (module docstring).
    tol : dict
        dtype name -> (rtol, atol relative to the reference's largest magnitude).
    inplace : bool
        An in-place optimizer step: ``fn`` copies ``param`` first, runs two
        steps and returns the parameter.
    exact_outputs : tuple of int
        Outputs compared exactly (knn's indices).
    cpu_dtypes : tuple of str
        Further dtypes the op accepts on the CPU (uint8 images), tested by
        their family's tests (rounding rules) rather than this matrix.
    """

    name: str
    fn: Callable
    kernels: tuple
    float_args: tuple
    dims: Mapping
    large: Mapping
    make: Callable
    ref_numpy: Callable
    ref_torch: Callable | None = None
    backward: str | None = None
    backends: tuple = BOTH
    dtypes: tuple = FLOATS
    layouts: str = ""
    takes_out: bool = False
    out_alias: tuple = ()
    empty: Mapping = field(default_factory=dict)
    special: str | None = "class"
    special_args: tuple | None = None
    tol: Mapping = field(default_factory=lambda: {"float32": (2e-4, 2e-5),
                                                  "float64": (1e-10, 1e-12)})
    inplace: bool = False
    exact_outputs: tuple = ()
    aliases: tuple = ()
    cpu_dtypes: tuple = ()

    def sample(self, rng, dtype, dims=None) -> Sample:
        """Random valid inputs of ``dtype`` and ``{**self.dims, **dims}``."""
        return self.make(rng, np_dtype(dtype), {**self.dims, **(dims or {})})

    def call(self, sample: Sample, out=None, **replace):
        """Call the op on ``sample`` with some arguments replaced."""
        kwargs = {**sample.args, **replace, **sample.kwargs}
        if out is not None:
            kwargs["out"] = out
        return self.fn(**kwargs)

    def reference(self, sample: Sample, prefer_torch=True) -> tuple:
        """float64 reference outputs: torch when installed (and known), else NumPy."""
        if prefer_torch and self.ref_torch is not None and torch_or_none() is not None:
            return tuple(np.asarray(r, dtype=np.float64) for r in self.ref_torch(sample))
        with np.errstate(all="ignore"):
            return tuple(np.asarray(r) for r in self.ref_numpy(_as_f64(sample)))


def np_dtype(name) -> np.dtype:
    """``np.dtype(name)``, importing ml_dtypes first for ``"bfloat16"`` (ImportError if absent)."""
    if str(name) == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def compute_dtype(name) -> str:
    """The dtype whose kernels run for ``name``: float32 for the storage-only HALF dtypes."""
    return "float32" if str(name) in HALF else str(name)


def _as_f64(sample: Sample) -> Sample:
    args = {k: (v.astype(np.float64) if isinstance(v, np.ndarray)
                and (v.dtype.kind == "f" or str(v.dtype) in HALF) else v)
            for k, v in sample.args.items()}
    return Sample(args, dict(sample.kwargs))


def outputs(result) -> tuple:
    """The op's result as a tuple of NumPy arrays (tuples, scalars and tensors alike)."""
    items = result if isinstance(result, tuple) else (result,)
    out = []
    for r in items:
        if hasattr(r, "detach"):  # torch
            r = r.detach().resolve_neg().resolve_conj().cpu()
            bf16 = str(r.dtype) == "torch.bfloat16"   # NumPy has no bfloat16: by its bits
            r = (r.view(torch_or_none().int16).numpy().view(np_dtype("bfloat16")) if bf16
                 else r.numpy())
        out.append(np.asarray(r))
    return tuple(out)


_TORCH = []


def torch_or_none():
    """torch if importable, else None (imported once)."""
    if not _TORCH:
        try:
            _TORCH.append(importlib.import_module("torch"))
        except ImportError:
            _TORCH.append(None)
    return _TORCH[0]


def _t(a):
    return torch_or_none().from_numpy(np.asarray(a, dtype=np.float64))


def _rand(rng, dtype, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(dtype)


# ------------------------------------------------------------------ shared references

def sparse_sep(Ay, Ax, x):
    """``Ay @ x @ Ax.T`` over the last two axes, skipping zero weights (so an
    inf outside a tap's support never becomes 0 * inf = NaN)."""
    out = np.zeros(x.shape[:-2] + (Ay.shape[0], Ax.shape[0]))
    for i in range(Ay.shape[0]):
        ps = np.nonzero(Ay[i])[0]
        for j in range(Ax.shape[0]):
            qs = np.nonzero(Ax[j])[0]
            if len(ps) and len(qs):
                w = Ay[i, ps][:, None] * Ax[j, qs][None, :]
                out[..., i, j] = (x[..., ps[:, None], qs[None, :]] * w).sum(axis=(-2, -1))
    return out


def linear_taps(n_in, n_out):
    """torch's bilinear (align_corners=False, no antialias) 1-D interpolation matrix."""
    A = np.zeros((n_out, n_in))
    if n_in == 0 or n_out == 0:
        return A
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        l1 = src - i0
        A[i, i0] += 1.0 - l1
        A[i, i1] += l1
    return A


def pool_taps(n_in, n_out):
    """Adaptive average pooling's 1-D matrix (torch's window rule)."""
    A = np.zeros((n_out, n_in))
    for i in range(n_out):
        s, e = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        A[i, s:e] = 1.0 / (e - s)
    return A


def _affine_base(H, W):
    def coords(n):
        return ((2 * np.arange(n) + 1) / n - 1) if n > 1 else np.zeros(n)
    base = np.empty((H, W, 3))
    base[..., 0] = coords(W)[None, :]
    base[..., 1] = coords(H)[:, None]
    base[..., 2] = 1.0
    return base


def _bilinear_parts(x, grid):
    """Taps of grid_sample (bilinear, zeros, align_corners=False) per output point."""
    N, C, H, W = x.shape
    ix = ((grid[..., 0] + 1) * W - 1) / 2
    iy = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = np.floor(ix), np.floor(iy)
    fx, fy = ix - x0, iy - y0
    taps = []
    for dy, wy, dwy in ((0, 1 - fy, -1.0), (1, fy, 1.0)):
        for dx, wx, dwx in ((0, 1 - fx, -1.0), (1, fx, 1.0)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            xs = np.where(ok, xi, 0).astype(np.int64)
            ys = np.where(ok, yi, 0).astype(np.int64)
            taps.append((ok, ys, xs, wy * wx, dwx * wy, wx * dwy))
    return taps, W / 2, H / 2


def _gather(x, ok, ys, xs):
    n = np.arange(x.shape[0])[:, None, None]
    v = x[n, :, ys, xs]            # (N, Ho, Wo, C)
    return np.where(ok[..., None], v, 0.0)


def _ref_grid_sample(s):
    x, grid = s.args["input"], s.args["grid"]
    taps, _, _ = _bilinear_parts(x, grid)
    out = np.zeros(grid.shape[:3] + (x.shape[1],))
    for ok, ys, xs, w, _, _ in taps:
        out += np.where(ok[..., None], _gather(x, ok, ys, xs) * w[..., None], 0.0)
    return (out.transpose(0, 3, 1, 2),)


def _ref_grid_sample_bwd(s):
    go, x, grid = s.args["grad_output"], s.args["input"], s.args["grid"]
    taps, sx, sy = _bilinear_parts(x, grid)
    g = go.transpose(0, 2, 3, 1)   # (N, Ho, Wo, C)
    gi = np.zeros_like(x)
    gg = np.zeros_like(grid)
    N = x.shape[0]
    for ok, ys, xs, w, dwx, dwy in taps:
        v = _gather(x, ok, ys, xs)
        gv = (g * v).sum(-1)
        # an out-of-bounds tap reads 0: a NaN/inf grad_output still gives NaN (as torch)
        gg[..., 0] += dwx * gv * sx
        gg[..., 1] += dwy * gv * sy
        for n in range(N):
            m = ok[n]
            contrib = g[n][m] * w[n][m][:, None]     # (P, C)
            np.add.at(gi[n].transpose(1, 2, 0), (ys[n][m], xs[n][m]), contrib)
    return gi, gg


# ------------------------------------------------------------------ samples

def _mk_lerp(rng, dt, d):
    return Sample({"a": _rand(rng, dt, d["B"], d["D"]), "b": _rand(rng, dt, d["B"], d["D"]),
                   "t": _rand(rng, dt, d["D"], lo=-0.2, hi=1.2)})


def _ref_lerp(s):
    a, b, t = s.args["a"], s.args["b"], s.args["t"]
    return (np.where(np.abs(t) < 0.5, a + t * (b - a), b - (b - a) * (1 - t)),)


def _torch_lerp(s):
    return (_t(s.args["a"]).lerp(_t(s.args["b"]), _t(s.args["t"])).numpy(),)


def _mk_slerp(rng, dt, d):
    return Sample({"a": _rand(rng, dt, d["B"], d["D"]), "b": _rand(rng, dt, d["B"], d["D"]),
                   "t": _rand(rng, dt, d["B"], lo=0.0, hi=1.0)})


def _norm(a):
    """Euclidean norm along the last axis without underflow or overflow."""
    m = np.max(np.abs(a), axis=-1, keepdims=True)
    m = np.where(m > 0, m, 1.0)
    return m * np.sqrt(((a / m) ** 2).sum(-1, keepdims=True))


def _ref_slerp(s):
    a, b, t = s.args["a"], s.args["b"], s.args["t"][..., None]
    na, nb = _norm(a), _norm(b)
    u, v = a / na, b / nb
    theta = np.arccos(np.clip((u * v).sum(-1, keepdims=True), -1, 1))
    sin = np.sin(theta)
    d = (np.sin((1 - t) * theta) * u + np.sin(t * theta) * v) / sin
    return ((((1 - t) * na + t * nb) * d),)


def _mk_slerp_bwd(rng, dt, d):
    s = _mk_slerp(rng, dt, d)
    return Sample({"grad_out": _rand(rng, dt, d["B"], d["D"]), **s.args})


def _row_scale(a):
    """A power of two near each row's largest |a_i| (1 for zero rows)."""
    m = np.max(np.abs(a), axis=-1, keepdims=True)
    return np.ldexp(1.0, np.frexp(np.where(m > 0, m, 1.0))[1])


def _slerp_formula(xa, xb, t, ma, mb):
    """slerp (norm='linear') of the rows a = ma xa and b = mb xb, in operations that accept
    complex values; xa, xb of unit scale, ma and mb real powers of two per row."""
    sa, sb = np.sqrt((xa * xa).sum(-1, keepdims=True)), np.sqrt((xb * xb).sum(-1, keepdims=True))
    u, v = xa / sa, xb / sb
    theta = np.arccos((u * v).sum(-1, keepdims=True))
    t = t[..., None]
    d = (np.sin((1 - t) * theta) * u + np.sin(t * theta) * v) / np.sin(theta)
    return ((1 - t) * (ma * sa) + t * (mb * sb)) * d


def _ref_slerp_bwd(s):
    """Complex-step derivatives of the textbook formula (exact to rounding), on rows
    scaled by powers of two; rows are independent, so one perturbed column of every row
    is one evaluation."""
    g, a, b, t = (s.args[k] for k in ("grad_out", "a", "b", "t"))
    ma, mb = _row_scale(a), _row_scale(b)
    xa, xb, h = a / ma, b / mb, 1e-30

    def loss(xa_, xb_, t_):
        return (g * _slerp_formula(xa_, xb_, t_, ma, mb)).sum(-1).imag / h
    cols = []
    for which, m in ((0, ma), (1, mb)):
        grad = np.zeros_like(a)
        for j in range(a.shape[-1]):
            x = [xa.astype(complex), xb.astype(complex)]
            x[which][..., j] += 1j * h
            grad[..., j] = loss(x[0], x[1], t) / m[..., 0]
        cols.append(grad)
    return (*cols, loss(xa, xb, t + 1j * h))


def _torch_slerp_bwd(s):
    torch = torch_or_none()

    def fwd(a, b, t):
        na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
        theta = torch.acos(((a / na) * (b / nb)).sum(-1, keepdim=True))
        t = t[..., None]
        d = (torch.sin((1 - t) * theta) * a / na + torch.sin(t * theta) * b / nb) / torch.sin(theta)
        return ((1 - t) * na + t * nb) * d
    return _torch_vjp(fwd, {k: s.args[k] for k in ("a", "b", "t")}, s.args["grad_out"],
                      ("a", "b", "t"))


def _mk_affine(rng, dt, d):
    return Sample({"theta": _rand(rng, dt, d["N"], 2, 3)},
                  {"size": (d["N"], 1, d["H"], d["W"])})


def _ref_affine(s):
    _, _, H, W = s.kwargs["size"]
    return (np.einsum("hwk,nrk->nhwr", _affine_base(H, W), s.args["theta"]),)


def _torch_affine(s):
    F = torch_or_none().nn.functional
    return (F.affine_grid(_t(s.args["theta"]), list(s.kwargs["size"]),
                          align_corners=False).numpy(),)


def _mk_affine_bwd(rng, dt, d):
    return Sample({"grad_grid": _rand(rng, dt, d["N"], d["H"], d["W"], 2)},
                  {"size": (d["N"], 1, d["H"], d["W"])})


def _ref_affine_bwd(s):
    _, _, H, W = s.kwargs["size"]
    return (np.einsum("hwk,nhwr->nrk", _affine_base(H, W), s.args["grad_grid"]),)


def _torch_vjp(forward, primals: dict, grads, wrt):
    torch = torch_or_none()
    leaves = {k: _t(v).requires_grad_(k in wrt) for k, v in primals.items()}
    out = forward(**leaves)
    out.backward(_t(grads))
    return tuple(leaves[k].grad.numpy() for k in wrt)


def _torch_affine_bwd(s):
    F = torch_or_none().nn.functional
    N, _, H, W = s.kwargs["size"]
    return _torch_vjp(lambda theta: F.affine_grid(theta, [N, 1, H, W], align_corners=False),
                      {"theta": np.zeros((N, 2, 3))}, s.args["grad_grid"], ("theta",))


def _mk_grid_sample(rng, dt, d):
    return Sample({"input": _rand(rng, dt, d["N"], d["C"], d["H"], d["W"]),
                   "grid": _rand(rng, dt, d["N"], d["Ho"], d["Wo"], 2, lo=-1.2, hi=1.2)})


def _torch_grid_sample(s):
    F = torch_or_none().nn.functional
    return (F.grid_sample(_t(s.args["input"]), _t(s.args["grid"]), align_corners=False).numpy(),)


def _mk_grid_sample_bwd(rng, dt, d):
    s = _mk_grid_sample(rng, dt, d)
    go = _rand(rng, dt, d["N"], d["C"], d["Ho"], d["Wo"])
    return Sample({"grad_output": go, **s.args})


def _torch_grid_sample_bwd(s):
    F = torch_or_none().nn.functional
    return _torch_vjp(lambda input, grid: F.grid_sample(input, grid, align_corners=False),
                      {"input": s.args["input"], "grid": s.args["grid"]},
                      s.args["grad_output"], ("input", "grid"))


def _mk_warp(rng, dt, d, rows=2):
    K = np.eye(3)[:rows] + rng.uniform(-0.25, 0.25, (d["N"], rows, 3))
    if rows == 3:
        K[:, 2, 2] = 1.0
        K[:, 2, :2] *= 0.5           # keep w away from 0 over [-1, 1]^2
    return Sample({"img": _rand(rng, dt, d["N"], d["C"], d["H"], d["W"])},
                  {"M": K, "dsize": (d["Ho"], d["Wo"]), "match": "torch"})


def _mk_warp_perspective(rng, dt, d):
    return _mk_warp(rng, dt, d, rows=3)


def _warp_points(s):
    """(u, v, w) per output pixel (N, Ho, Wo, 3) and the base coordinates (Ho, Wo, 3)."""
    base = _affine_base(*s.kwargs["dsize"])
    K = s.kwargs["M"]
    uvw = np.einsum("hwk,nrk->nhwr", base, K)
    if K.shape[1] == 2:
        uvw = np.concatenate([uvw, np.ones(uvw.shape[:3] + (1,))], axis=-1)
    return uvw, base


def _ref_warp(s):
    uvw, _ = _warp_points(s)
    grid = uvw[..., :2] / uvw[..., 2:]
    return _ref_grid_sample(Sample({"input": s.args["img"], "grid": grid}))


def _torch_warp(s):
    if s.kwargs["M"].shape[1] != 2:
        return _ref_warp(s)
    F = torch_or_none().nn.functional
    N, C = s.args["img"].shape[:2]
    grid = F.affine_grid(_t(s.kwargs["M"]), [N, C, *s.kwargs["dsize"]], align_corners=False)
    return (F.grid_sample(_t(s.args["img"]), grid, align_corners=False).numpy(),)


def _mk_warp_bwd(rng, dt, d, rows=2):
    s = _mk_warp(rng, dt, d, rows)
    go = _rand(rng, dt, d["N"], d["C"], d["Ho"], d["Wo"])
    return Sample({"grad_output": go, **s.args}, s.kwargs)


def _mk_warp_perspective_bwd(rng, dt, d):
    return _mk_warp_bwd(rng, dt, d, rows=3)


def _ref_warp_bwd(s):
    uvw, base = _warp_points(s)
    w = uvw[..., 2:]
    grid = uvw[..., :2] / w
    gi, gg = _ref_grid_sample_bwd(Sample({"grad_output": s.args["grad_output"],
                                          "input": s.args["img"], "grid": grid}))
    rows = s.kwargs["M"].shape[1]
    gK = np.zeros((gg.shape[0], rows, 3))
    gK[:, :2] = np.einsum("hwk,nhwr->nrk", base, gg / w)
    if rows == 3:
        gK[:, 2] = np.einsum("hwk,nhw->nk", base, -(gg * grid).sum(-1) / w[..., 0])
    return gi, gK


def _mk_rotate(rng, dt, d):
    return Sample({"img": _rand(rng, dt, d["N"], d["C"], d["H"], d["W"])},
                  {"angle": float(rng.uniform(-180, 180)), "scale": float(rng.uniform(0.7, 1.3))})


def _ref_rotate(s):
    import fastinterp as fi
    x = s.args["img"]
    N, _, H, W = x.shape
    M = np.vstack([fi.rotation_matrix(s.kwargs["angle"], ((W - 1) / 2, (H - 1) / 2),
                                      s.kwargs["scale"]), [0.0, 0.0, 1.0]])
    ys, xs = np.mgrid[0:H, 0:W]
    src = np.einsum("rk,hwk->hwr", np.linalg.inv(M), np.stack([xs, ys, np.ones_like(xs)], -1))
    grid = np.stack([(2 * src[..., 0] + 1) / W - 1, (2 * src[..., 1] + 1) / H - 1], -1)
    return _ref_grid_sample(Sample({"input": x, "grid": np.broadcast_to(grid, (N, H, W, 2))}))


def _mk_resize(rng, dt, d):
    return Sample({"input": _rand(rng, dt, d["N"], d["C"], d["H"], d["W"])},
                  {"size": (d["Ho"], d["Wo"]), "mode": "bilinear"})


def _ref_resize(s):
    x = s.args["input"]
    Ho, Wo = s.kwargs["size"]
    return (sparse_sep(linear_taps(x.shape[2], Ho), linear_taps(x.shape[3], Wo), x),)


def _torch_resize(s):
    F = torch_or_none().nn.functional
    return (F.interpolate(_t(s.args["input"]), size=tuple(s.kwargs["size"]), mode="bilinear",
                          align_corners=False).numpy(),)


def _mk_resize_bwd(rng, dt, d):
    return Sample({"grad_output": _rand(rng, dt, d["N"], d["C"], d["Ho"], d["Wo"])},
                  {"input_size": (d["N"], d["C"], d["H"], d["W"]), "mode": "bilinear"})


def _ref_resize_bwd(s):
    _, _, H, W = s.kwargs["input_size"]
    g = s.args["grad_output"]
    return (sparse_sep(linear_taps(H, g.shape[2]).T, linear_taps(W, g.shape[3]).T, g),)


def _torch_resize_bwd(s):
    F = torch_or_none().nn.functional
    g = s.args["grad_output"]
    return _torch_vjp(lambda input: F.interpolate(input, size=g.shape[2:], mode="bilinear",
                                                  align_corners=False),
                      {"input": np.zeros(s.kwargs["input_size"])}, g, ("input",))


def _mk_pool(rng, dt, d):
    return Sample({"input": _rand(rng, dt, d["N"], d["C"], d["H"], d["W"])},
                  {"output_size": (d["Ho"], d["Wo"])})


def _ref_pool(s):
    x = s.args["input"]
    Ho, Wo = s.kwargs["output_size"]
    return (sparse_sep(pool_taps(x.shape[2], Ho), pool_taps(x.shape[3], Wo), x),)


def _torch_pool(s):
    F = torch_or_none().nn.functional
    return (F.adaptive_avg_pool2d(_t(s.args["input"]), tuple(s.kwargs["output_size"])).numpy(),)


def _mk_pool_bwd(rng, dt, d):
    return Sample({"grad_output": _rand(rng, dt, d["N"], d["C"], d["Ho"], d["Wo"])},
                  {"input_size": (d["N"], d["C"], d["H"], d["W"])})


def _ref_pool_bwd(s):
    _, _, H, W = s.kwargs["input_size"]
    g = s.args["grad_output"]
    return (sparse_sep(pool_taps(H, g.shape[2]).T, pool_taps(W, g.shape[3]).T, g),)


def _torch_pool_bwd(s):
    F = torch_or_none().nn.functional
    g = s.args["grad_output"]
    return _torch_vjp(lambda input: F.adaptive_avg_pool2d(input, g.shape[2:]),
                      {"input": np.zeros(s.kwargs["input_size"])}, g, ("input",))


def sparse_axes(mats, x):
    """One matrix per trailing axis (``A @`` along that axis), axis after axis, skipping
    zero weights (the separable references of 1-D and 3-D pooling)."""
    k = len(mats)
    for a, A in enumerate(mats):
        axis = x.ndim - k + a
        xm = np.moveaxis(x, axis, -1)
        out = np.zeros(xm.shape[:-1] + (A.shape[0],))
        for i in range(A.shape[0]):
            ps = np.nonzero(A[i])[0]
            if len(ps):
                out[..., i] = (xm[..., ps] * A[i, ps]).sum(-1)
        x = np.moveaxis(out, -1, axis)
    return x


_POOL_AXES = {1: ("L",), 3: ("D", "H", "W")}


def _pool_nd(k):
    """make / reference / torch functions of adaptive_avg_pool{k}d and its backward."""
    axes = _POOL_AXES[k]
    outs = tuple(a + "o" for a in axes)

    def make(rng, dt, d):
        return Sample({"input": _rand(rng, dt, d["N"], d["C"], *(d[a] for a in axes))},
                      {"output_size": tuple(d[a] for a in outs)})

    def ref(s):
        x = s.args["input"]
        mats = [pool_taps(n, o) for n, o in zip(x.shape[2:], s.kwargs["output_size"])]
        return (sparse_axes(mats, x),)

    def torch_ref(s):
        F = torch_or_none().nn.functional
        pool = getattr(F, f"adaptive_avg_pool{k}d")
        return (pool(_t(s.args["input"]), tuple(s.kwargs["output_size"])).numpy(),)

    def make_bwd(rng, dt, d):
        return Sample({"grad_output": _rand(rng, dt, d["N"], d["C"], *(d[a] for a in outs))},
                      {"input_size": (d["N"], d["C"]) + tuple(d[a] for a in axes)})

    def ref_bwd(s):
        g = s.args["grad_output"]
        mats = [pool_taps(n, o).T for n, o in zip(s.kwargs["input_size"][2:], g.shape[2:])]
        return (sparse_axes(mats, g),)

    def torch_bwd(s):
        F = torch_or_none().nn.functional
        pool = getattr(F, f"adaptive_avg_pool{k}d")
        g = s.args["grad_output"]
        return _torch_vjp(lambda input: pool(input, g.shape[2:]),
                          {"input": np.zeros(s.kwargs["input_size"])}, g, ("input",))

    return make, ref, torch_ref, make_bwd, ref_bwd, torch_bwd


def _pool_nd_records(fi, loose):
    """Records of adaptive_avg_pool1d/3d and their backwards (CPU kernels)."""
    sizes = {1: ({"N": 2, "C": 3, "L": 7, "Lo": 3}, {"N": 2, "C": 8, "L": 40000, "Lo": 9999}),
             3: ({"N": 2, "C": 3, "D": 4, "H": 5, "W": 6, "Do": 3, "Ho": 2, "Wo": 4},
                 {"N": 2, "C": 8, "D": 24, "H": 40, "W": 40, "Do": 11, "Ho": 17, "Wo": 13})}
    recs = []
    for k, (dims, large) in sizes.items():
        make, ref, torch_ref, make_bwd, ref_bwd, torch_bwd = _pool_nd(k)
        name = f"adaptive_avg_pool{k}d"
        shape = "(N, C, L)" if k == 1 else "(N, C, D, H, W)"
        empty = {"N0": {"N": 0}, "C0": {"C": 0}}
        recs.append(OpRecord(name, getattr(fi, name), (name,), ("input",), dims, large, make,
                             ref, torch_ref, backward=name + "_backward", backends=("cpu",),
                             layouts=shape, takes_out=True, empty=empty))
        recs.append(OpRecord(name + "_backward", getattr(fi, name + "_backward"),
                             (name + "_backward",), ("grad_output",), dims, large, make_bwd,
                             ref_bwd, torch_bwd, backends=("cpu",), layouts=shape,
                             takes_out=True, empty=empty, tol=loose))
    return recs


def _mk_pair(rng, dt, d):
    """x (*Bx, M, D) and y (*By, N, D): leading batch dimensions that broadcast
    (``Bx``/``By`` default to none)."""
    return Sample({"x": _rand(rng, dt, *d.get("Bx", ()), d["M"], d["D"], lo=-2, hi=2),
                   "y": _rand(rng, dt, *d.get("By", ()), d["N"], d["D"], lo=-2, hi=2)})


def _lead(*arrays):
    """The broadcast leading (batch) shape of (..., rows, D) operands."""
    return broadcast_shapes(a.shape[:-2] for a in arrays)


def _ref_sqdist(s):
    diff = s.args["x"][..., :, None, :] - s.args["y"][..., None, :, :]
    return ((diff * diff).sum(-1),)


def _ref_l2(s):
    """|x_i - y_j| with the differences scaled by their largest magnitude, so that a
    distance that fits the dtype is finite even when its square overflows."""
    diff = s.args["x"][..., :, None, :] - s.args["y"][..., None, :, :]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = np.abs(diff).max(axis=-1, initial=0.0)
        safe = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        scaled = np.sqrt(((diff / safe[..., None]) ** 2).sum(-1)) * safe
    return (np.where(np.isfinite(scale) & (scale > 0), scaled, np.sqrt((diff * diff).sum(-1))),)


def _torch_sqdist(s):
    return ((_torch_l2(s)[0]) ** 2,)


def _torch_l2(s):
    torch = torch_or_none()
    return (torch.cdist(_t(s.args["x"]), _t(s.args["y"]),
                        compute_mode="donot_use_mm_for_euclid_dist").numpy(),)


def _mk_pair_bwd(rng, dt, d):
    s = _mk_pair(rng, dt, d)
    shape = _lead(s.args["x"], s.args["y"]) + (d["M"], d["N"])
    return Sample({"grad_out": _rand(rng, dt, *shape), **s.args})


def _reduce_to(a, shape):
    """``a`` summed over the dimensions that broadcasting added to ``shape``."""
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead))) if lead else a
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


def _sqdist_vjp(g, x, y):
    gx = 2 * (g.sum(-1)[..., None] * x - g @ y)
    gy = 2 * (g.sum(-2)[..., None] * y - np.swapaxes(g, -1, -2) @ x)
    return _reduce_to(gx, x.shape), _reduce_to(gy, y.shape)


def _ref_sqdist_bwd(s):
    return _sqdist_vjp(s.args["grad_out"], s.args["x"], s.args["y"])


def _ref_l2_bwd(s):
    d = _ref_l2(s)[0]
    return _sqdist_vjp(s.args["grad_out"] / (2 * d), s.args["x"], s.args["y"])


def _torch_pair_bwd(kind):
    def ref(s):
        torch = torch_or_none()

        def fwd(x, y):
            d = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
            return d * d if kind == "sq" else d
        return _torch_vjp(fwd, {"x": s.args["x"], "y": s.args["y"]}, s.args["grad_out"],
                          ("x", "y"))
    return ref


def _mk_knn(rng, dt, d):
    return Sample({"x": _rand(rng, dt, *d.get("Bx", ()), d["N"], d["D"]),
                   "queries": _rand(rng, dt, *d.get("Bq", ()), d["Q"], d["D"])},
                  {"k": d["k"]})


def _ref_knn(s):
    x, q, k = s.args["x"], s.args["queries"], s.kwargs["k"]
    if not 1 <= k <= x.shape[-2]:
        raise ValueError("knn: k must be in [1, N]")
    diff = q[..., :, None, :] - x[..., None, :, :]
    d = (diff * diff).sum(-1)
    # ascending, +inf after finite, NaN last; ties by the smaller index (lexsort is stable)
    key = np.where(np.isnan(d), 2, np.where(np.isinf(d), 1, 0))
    order = np.lexsort((np.where(np.isfinite(d), d, 0), key), axis=-1)[..., :k]
    return np.take_along_axis(d, order, -1), order


# Distances: leading batch dimensions that broadcast (x (2, 1, M, D) with y (3, N, D)).
PAIR_DIMS = {"M": 5, "N": 6, "D": 4, "Bx": (2, 1), "By": (3,)}
PAIR_LARGE = {"M": 1000, "N": 420, "D": 64, "Bx": (2,), "By": ()}
PAIR_LAYOUT = "x (..., M, D), y (..., N, D), leading dimensions broadcast -> (..., M, N)"
PAIR_EMPTY = {"M0": {"M": 0}, "D0": {"D": 0}, "B0": {"Bx": (0, 1)}}


# ------------------------------------------------------------------ optimizers

def _fresh_param(param):
    if hasattr(param, "clone"):  # torch: a contiguous copy with its bits resolved
        return param.detach().resolve_neg().resolve_conj().contiguous().clone()
    return np.array(param, copy=True, order="C")


def _run_opt(cls, hyper, param, grad):
    p = _fresh_param(param)
    opt = cls([p], **hyper)
    opt.step([grad])
    opt.step([grad])
    return p


_SGD = dict(lr=0.1, momentum=0.9)
_ADAM = dict(lr=0.01)
_ADAMW = dict(lr=0.01, weight_decay=0.1)


def _sgd(param, grad):
    """Two SGD(lr=0.1, momentum=0.9) steps on a copy of ``param``; returns it."""
    from fastinterp.optim import SGD
    return _run_opt(SGD, _SGD, param, grad)


def _adam(param, grad):
    """Two Adam(lr=0.01) steps on a copy of ``param``; returns it."""
    from fastinterp.optim import Adam
    return _run_opt(Adam, _ADAM, param, grad)


def _adamw(param, grad):
    """Two AdamW(lr=0.01, weight_decay=0.1) steps on a copy of ``param``; returns it."""
    from fastinterp.optim import AdamW
    return _run_opt(AdamW, _ADAMW, param, grad)


def _mk_opt(rng, dt, d):
    return Sample({"param": _rand(rng, dt, d["B"], d["D"]), "grad": _rand(rng, dt, d["B"], d["D"])})


def _ref_sgd(s):
    p, g = s.args["param"].copy(), s.args["grad"]
    buf = None
    for _ in range(2):
        buf = g.copy() if buf is None else _SGD["momentum"] * buf + g
        p = p - _SGD["lr"] * buf
    return (p,)


def _ref_adam_like(decoupled_wd):
    def ref(s):
        p, g = s.args["param"].copy(), s.args["grad"]
        lr, (b1, b2), eps = _ADAM["lr"], (0.9, 0.999), 1e-8
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        for step in (1, 2):
            if decoupled_wd:
                p = p * (1 - lr * decoupled_wd)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            denom = np.sqrt(v) / np.sqrt(1 - b2 ** step) + eps
            p = p - (lr / (1 - b1 ** step)) * m / denom
        return (p,)
    return ref


def _torch_opt(name, hyper):
    def ref(s):
        torch = torch_or_none()
        p = _t(s.args["param"]).clone().requires_grad_(True)
        opt = getattr(torch.optim, name)([p], **hyper, foreach=False)
        for _ in range(2):
            p.grad = _t(s.args["grad"]).clone()
            opt.step()
        return (p.detach().numpy(),)
    return ref


# ------------------------------------------------------------------ NCA

def _nca():
    from fastinterp.models import nca
    return nca


def _nca_loss_grad(A, X, labels, anchors=None, reg=0.0):
    """fastinterp.models.nca.nca_loss_grad (imported when first called)."""
    return _nca().nca_loss_grad(A, X, labels, anchors=anchors, reg=reg)


def _mk_nca(rng, dt, d):
    labels = np.arange(d["N"]) % 3
    return Sample({"A": _rand(rng, dt, d["k"], d["D"]), "X": _rand(rng, dt, d["N"], d["D"]),
                   "labels": labels}, {"reg": 0.01})


def _nca_exact(A, X, labels, reg):
    """NCA by its definition in exact rational arithmetic (only the exponentials are
    rounded, to float64): the loss and ``(2/B) sum_ij W_ij (z_i - z_j)(x_i - x_j)^T
    + 2 reg A`` with ``W = q - p``. NaN/inf inputs, or squared distances beyond
    float64's range (the op's contract), give NaN."""
    from fractions import Fraction
    n, (k, dim) = len(X), A.shape
    nan = (np.asarray(np.nan), np.full(A.shape, np.nan))
    if not (np.isfinite(A).all() and np.isfinite(X).all()):
        return nan
    Af = [[Fraction(float(v)) for v in row] for row in A]
    Xf = [[Fraction(float(v)) for v in row] for row in X]
    Z = [[sum(x[c] * a[c] for c in range(dim)) for a in Af] for x in Xf]
    d = [[sum((Z[i][r] - Z[j][r]) ** 2 for r in range(k)) for j in range(n)] for i in range(n)]
    if any(d[i][j] > Fraction(np.finfo(np.float64).max) for i in range(n) for j in range(n)):
        return nan

    def rexp(x):                              # exp(-x), x >= 0 rational, as a rational
        return Fraction(float(np.exp(-min(float(x), 1e300))))

    total, grad = Fraction(0), [[Fraction(0)] * dim for _ in range(k)]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        same = [j for j in others if labels[j] == labels[i]]
        if not same:
            continue
        m, mc = min(d[i][j] for j in others), min(d[i][j] for j in same)
        e = {j: rexp(d[i][j] - m) for j in others}
        ec = {j: rexp(d[i][j] - mc) for j in same}
        s, sc = sum(e.values()), sum(ec.values())
        total += Fraction(float(mc - m)) + Fraction(np.log(float(s))) - Fraction(np.log(float(sc)))
        for j in others:
            w = ec.get(j, 0) / sc - e[j] / s
            for r in range(k):
                dz = w * (Z[i][r] - Z[j][r])
                for c in range(dim):
                    grad[r][c] += dz * (Xf[i][c] - Xf[j][c])
    b = max(n, 1)
    regf = Fraction(reg)

    def rnd(x):
        try:
            return float(x)
        except OverflowError:
            return np.inf if x > 0 else -np.inf

    loss = rnd(total / b + regf * sum(v * v for row in Af for v in row))
    g = np.array([[rnd(2 * grad[r][c] / b + 2 * regf * Af[r][c]) for c in range(dim)]
                  for r in range(k)])
    return np.asarray(loss), g


def _ref_nca(s):
    A, X, labels, reg = s.args["A"], s.args["X"], s.args["labels"], s.kwargs["reg"]
    return _nca_exact(A, X, labels, reg)


# ------------------------------------------------------------------ the table

_WARP_DIMS = {"N": 2, "C": 3, "H": 5, "W": 6, "Ho": 4, "Wo": 3}
_WARP_LARGE = {"N": 2, "C": 8, "H": 32, "W": 32, "Ho": 64, "Wo": 64}


def _build() -> dict:
    import fastinterp as fi
    img = ("(N, C, H, W) or, with layout=, (N, H, W, C), (C, H, W), (H, W, C), (H, W)")
    loose = {"float32": (2e-4, 2e-5), "float64": (1e-9, 1e-11)}
    recs = [
        OpRecord("lerp", fi.lerp, ("lerp",), ("a", "b", "t"), {"B": 3, "D": 4},
                 {"B": 400, "D": 256}, _mk_lerp, _ref_lerp, _torch_lerp,
                 layouts="any shapes that broadcast", takes_out=True, out_alias=("a", "b"),
                 empty={"B0": {"B": 0}, "D0": {"D": 0}}),
        OpRecord("slerp", fi.slerp, ("slerp",), ("a", "b", "t"), {"B": 4, "D": 5},
                 {"B": 4000, "D": 32}, _mk_slerp, _ref_slerp, None, backward="slerp_backward",
                 layouts="(..., D) vectors along axis", takes_out=True,
                 empty={"B0": {"B": 0}}, special="finite",
                 tol={"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}),
        OpRecord("slerp_backward", fi.slerp_backward, ("slerp_backward",),
                 ("grad_out", "a", "b", "t"), {"B": 4, "D": 5}, {"B": 4000, "D": 32},
                 _mk_slerp_bwd, _ref_slerp_bwd, _torch_slerp_bwd, backends=("cpu",),
                 layouts="grad_out (..., D) like slerp's output -> (grad_a, grad_b, grad_t)",
                 empty={"B0": {"B": 0}}, special="finite", tol=loose),
        OpRecord("affine_grid", fi.affine_grid, ("affine_grid",), ("theta",),
                 {"N": 2, "H": 3, "W": 4}, {"N": 8, "H": 128, "W": 128}, _mk_affine,
                 _ref_affine, _torch_affine, backward="affine_grid_backward",
                 layouts="theta (N, 2, 3) -> grid (N, H, W, 2)", takes_out=True,
                 empty={"N0": {"N": 0}, "H0": {"H": 0}}, special="finite"),
        OpRecord("affine_grid_backward", fi.affine_grid_backward, ("affine_grid_backward",),
                 ("grad_grid",), {"N": 2, "H": 3, "W": 4}, {"N": 8, "H": 128, "W": 128},
                 _mk_affine_bwd, _ref_affine_bwd, _torch_affine_bwd,
                 layouts="grad_grid (N, H, W, 2) -> (N, 2, 3)",
                 empty={"N0": {"N": 0}, "H0": {"H": 0}}, special="finite", tol=loose),
        OpRecord("grid_sample", fi.grid_sample, ("grid_sample",), ("input", "grid"),
                 {"N": 2, "C": 3, "H": 5, "W": 6, "Ho": 4, "Wo": 3},
                 {"N": 2, "C": 8, "H": 32, "W": 32, "Ho": 64, "Wo": 64}, _mk_grid_sample,
                 _ref_grid_sample, _torch_grid_sample, backward="grid_sample_backward",
                 layouts=img + "; grid (N, H_out, W_out, 2) ((H_out, W_out, 2) for one image)",
                 takes_out=True, cpu_dtypes=("uint8",),
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="class", special_args=("input",)),
        OpRecord("grid_sample_backward", fi.grid_sample_backward, ("grid_sample_backward",),
                 ("grad_output", "input", "grid"),
                 {"N": 2, "C": 3, "H": 5, "W": 6, "Ho": 4, "Wo": 3},
                 {"N": 2, "C": 8, "H": 32, "W": 32, "Ho": 64, "Wo": 64}, _mk_grid_sample_bwd,
                 _ref_grid_sample_bwd, _torch_grid_sample_bwd, layouts=img,
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="finite", special_args=("grad_output", "input"), tol=loose),
        OpRecord("warp_affine", fi.warp_affine, ("grid_sample",), ("img",), _WARP_DIMS,
                 _WARP_LARGE, _mk_warp, _ref_warp, _torch_warp, backward="warp_affine_backward",
                 layouts=img + "; M (2, 3) or (N, 2, 3)", takes_out=True,
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="class", special_args=("img",)),
        OpRecord("warp_affine_backward", fi.warp_affine_backward, ("grid_sample_backward",),
                 ("grad_output", "img"), _WARP_DIMS, _WARP_LARGE, _mk_warp_bwd, _ref_warp_bwd,
                 None, layouts=img + " -> (grad_img, grad_M)",
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="finite", special_args=("grad_output", "img"), tol=loose),
        OpRecord("warp_perspective", fi.warp_perspective, ("grid_sample",), ("img",),
                 _WARP_DIMS, _WARP_LARGE, _mk_warp_perspective, _ref_warp, _torch_warp,
                 backward="warp_perspective_backward", backends=("cpu",),
                 layouts=img + "; H (3, 3) or (N, 3, 3)", takes_out=True,
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="class", special_args=("img",)),
        OpRecord("warp_perspective_backward", fi.warp_perspective_backward,
                 ("grid_sample_backward",), ("grad_output", "img"), _WARP_DIMS, _WARP_LARGE,
                 _mk_warp_perspective_bwd, _ref_warp_bwd, None, backends=("cpu",),
                 layouts=img + " -> (grad_img, grad_H)",
                 empty={"N0": {"N": 0}, "C0": {"C": 0}, "Ho0": {"Ho": 0}},
                 special="finite", special_args=("grad_output", "img"), tol=loose),
        OpRecord("rotate", fi.rotate, ("grid_sample",), ("img",),
                 {"N": 2, "C": 3, "H": 5, "W": 6}, {"N": 2, "C": 8, "H": 64, "W": 64},
                 _mk_rotate, _ref_rotate, None, layouts=img,
                 takes_out=True, empty={"N0": {"N": 0}, "C0": {"C": 0}},
                 special="class", special_args=("img",)),
        OpRecord("resize", fi.resize, ("resize",), ("input",),
                 {"N": 2, "C": 3, "H": 5, "W": 6, "Ho": 7, "Wo": 4},
                 {"N": 2, "C": 8, "H": 64, "W": 64, "Ho": 97, "Wo": 81}, _mk_resize,
                 _ref_resize, _torch_resize, backward="resize_backward", layouts=img,
                 takes_out=True, aliases=("interpolate",), cpu_dtypes=("uint8",),
                 empty={"N0": {"N": 0}, "C0": {"C": 0}}),
        OpRecord("resize_backward", fi.resize_backward, ("resize_backward",), ("grad_output",),
                 {"N": 2, "C": 3, "H": 5, "W": 6, "Ho": 7, "Wo": 4},
                 {"N": 2, "C": 8, "H": 64, "W": 64, "Ho": 97, "Wo": 81}, _mk_resize_bwd,
                 _ref_resize_bwd, _torch_resize_bwd, layouts=img, takes_out=True,
                 empty={"N0": {"N": 0}, "C0": {"C": 0}}, tol=loose),
        OpRecord("adaptive_avg_pool2d", fi.adaptive_avg_pool2d, ("adaptive_avg_pool2d",),
                 ("input",), {"N": 2, "C": 3, "H": 7, "W": 5, "Ho": 3, "Wo": 4},
                 {"N": 2, "C": 8, "H": 96, "W": 96, "Ho": 37, "Wo": 41}, _mk_pool, _ref_pool,
                 _torch_pool, backward="adaptive_avg_pool2d_backward", layouts=img,
                 takes_out=True, cpu_dtypes=("uint8",), empty={"N0": {"N": 0}, "C0": {"C": 0}}),
        OpRecord("adaptive_avg_pool2d_backward", fi.adaptive_avg_pool2d_backward,
                 ("adaptive_avg_pool2d_backward",), ("grad_output",),
                 {"N": 2, "C": 3, "H": 7, "W": 5, "Ho": 3, "Wo": 4},
                 {"N": 2, "C": 8, "H": 96, "W": 96, "Ho": 37, "Wo": 41}, _mk_pool_bwd,
                 _ref_pool_bwd, _torch_pool_bwd, layouts=img, takes_out=True,
                 empty={"N0": {"N": 0}, "C0": {"C": 0}}, tol=loose),
        *_pool_nd_records(fi, loose),
        OpRecord("pairwise_sqdist", fi.pairwise_sqdist, ("pairwise_sqdist",), ("x", "y"),
                 PAIR_DIMS, PAIR_LARGE, _mk_pair, _ref_sqdist, _torch_sqdist,
                 backward="pairwise_sqdist_backward", layouts=PAIR_LAYOUT, takes_out=True,
                 empty=PAIR_EMPTY, special="finite",
                 tol={"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}),
        OpRecord("pairwise_l2", fi.pairwise_l2, ("pairwise_l2",), ("x", "y"),
                 PAIR_DIMS, PAIR_LARGE, _mk_pair, _ref_l2, _torch_l2,
                 backward="pairwise_l2_backward", layouts=PAIR_LAYOUT, takes_out=True,
                 empty=PAIR_EMPTY, special="finite",
                 tol={"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}),
        OpRecord("pairwise_sqdist_backward", fi.pairwise_sqdist_backward,
                 ("pairwise_sqdist_backward",), ("grad_out", "x", "y"),
                 PAIR_DIMS, PAIR_LARGE, _mk_pair_bwd, _ref_sqdist_bwd, _torch_pair_bwd("sq"),
                 layouts="grad_out (..., M, N) -> grads of x's and y's shapes",
                 empty=PAIR_EMPTY, special="finite", tol=loose),
        OpRecord("pairwise_l2_backward", fi.pairwise_l2_backward,
                 ("pairwise_l2_backward",), ("grad_out", "x", "y"),
                 PAIR_DIMS, PAIR_LARGE, _mk_pair_bwd, _ref_l2_bwd, _torch_pair_bwd("l2"),
                 layouts="grad_out (..., M, N) -> grads of x's and y's shapes",
                 empty=PAIR_EMPTY, special="finite", tol=loose),
        OpRecord("knn", fi.knn, ("knn",), ("x", "queries"),
                 {"N": 8, "Q": 5, "D": 3, "k": 3, "Bx": (2, 1), "Bq": (3,)},
                 {"N": 2000, "Q": 300, "D": 16, "k": 5, "Bx": (2,), "Bq": ()}, _mk_knn,
                 _ref_knn, None,
                 layouts="x (..., N, D), queries (..., Q, D), leading dimensions broadcast "
                         "-> (..., Q, k) distances, int64 indices",
                 empty={"Q0": {"Q": 0}, "D0": {"D": 0}, "N0": {"N": 0}, "B0": {"Bx": (0, 1)}},
                 special="class", exact_outputs=(1,)),
        OpRecord("SGD", _sgd, ("sgd_step", "state_copy"), ("param", "grad"), {"B": 3, "D": 4},
                 {"B": 1000, "D": 256}, _mk_opt, _ref_sgd, _torch_opt("SGD", _SGD),
                 layouts="any shape (param updated in place, C-contiguous)",
                 empty={"B0": {"B": 0}}, inplace=True),
        OpRecord("Adam", _adam, ("adam_step", "state_copy"), ("param", "grad"), {"B": 3, "D": 4},
                 {"B": 1000, "D": 256}, _mk_opt, _ref_adam_like(0.0), _torch_opt("Adam", _ADAM),
                 layouts="any shape (param updated in place, C-contiguous)",
                 empty={"B0": {"B": 0}}, inplace=True,
                 tol={"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}),
        OpRecord("AdamW", _adamw, ("adam_step", "state_copy"), ("param", "grad"), {"B": 3, "D": 4},
                 {"B": 1000, "D": 256}, _mk_opt, _ref_adam_like(_ADAMW["weight_decay"]),
                 _torch_opt("AdamW", _ADAMW),
                 layouts="any shape (param updated in place, C-contiguous)",
                 empty={"B0": {"B": 0}}, inplace=True,
                 tol={"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}),
        OpRecord("nca_loss_grad", _nca_loss_grad, ("nca_softmax",), ("A", "X"),
                 {"k": 2, "D": 3, "N": 8}, {"k": 8, "D": 32, "N": 600}, _mk_nca, _ref_nca, None,
                 backends=("cpu",), layouts="A (k, D), X (N, D), labels (N,) -> (loss, (k, D))",
                 special="finite", tol={"float32": (1e-3, 1e-4), "float64": (1e-6, 1e-8)}),
    ]
    return {r.name: _with_half(r) for r in recs}


def _with_half(rec: OpRecord) -> OpRecord:
    """The record with the HALF storage dtypes added where the dispatcher supports them."""
    from ._dispatch import HALF_OPS
    if rec.name not in HALF_OPS:
        return rec
    return dataclasses.replace(rec, dtypes=rec.dtypes + HALF, tol={**rec.tol, **HALF_TOL})


_RECORDS: dict = {}


def records() -> list:
    """Every op record, in table order."""
    if not _RECORDS:
        _RECORDS.update(_build())
    return list(_RECORDS.values())


def record(name: str) -> OpRecord:
    """The record of op ``name`` (a public name or alias)."""
    for r in records():
        if name == r.name or name in r.aliases:
            return r
    raise KeyError(f"record: no op record named {name!r}; known: "
                   f"{', '.join(r.name for r in records())}.")
