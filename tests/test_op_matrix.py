"""The hostile-input matrix, generated from the op table (fastinterp/_optable.py).

Every op record gets: a reference check; special values (NaN, +-inf, huge
finite, subnormal) and zero-size axes, run in one subprocess per op so that a
crash fails that case instead of the suite; non-contiguous, negative-stride,
Fortran-order, zero-stride and read-only inputs; torch views (transpose,
expand, negative and conjugate bits, requires_grad, bfloat16); ``out=`` misuse;
float16/bfloat16 storage where a record lists it;
wrong dtypes; 8 concurrent calling threads; and bit-identical results for 1 and
2 fastinterp threads and 1 and 2 BLAS threads.

Cases that fail on the current code are listed once in KNOWN_FAILURES (op,
case-id glob, reason) and run as strict xfails: when a fix lands the case
passes, the strict xfail fails, and its entry must be removed.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _optable as ot
from fastinterp import _registry as registry

RECORDS = ot.records()
DTYPES = ("float32", "float64")
SEED = 20240610

OPTIMIZERS = ("SGD", "Adam", "AdamW")
ALL = tuple(r.name for r in RECORDS)
NON_OPT = tuple(n for n in ALL if n not in OPTIMIZERS)
TAKES_OUT = tuple(r.name for r in RECORDS if r.takes_out)
LINEAR_BWD = ("resize_backward", "adaptive_avg_pool2d_backward")

# (ops, case-id glob, reason): cases failing on the current code, run as strict xfails.
# Case ids are "<test>:<detail>" as in the test ids. Remove an entry when its fix lands.
KNOWN_FAILURES: list[tuple[tuple, str, str]] = [
]


def _known(op: str, case: str) -> str | None:
    for ops, pattern, reason in KNOWN_FAILURES:
        if op in ((ops,) if isinstance(ops, str) else ops) and fnmatch.fnmatchcase(case, pattern):
            return reason
    return None


def _param(rec, case: str, *values):
    """A pytest param ``<op>-<case>``, a strict xfail if KNOWN_FAILURES lists it."""
    reason = _known(rec.name, case)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(rec, *values, id=f"{rec.name}-{case}", marks=marks)


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(repr(key).encode())])


def _sample(rec, dtype, dims=None, key=()):
    return rec.sample(_rng(rec.name, dtype, *key), dtype, dims)


def _run(rec, sample, out=None, **replace):
    return ot.outputs(rec.call(sample, out=out, **replace))


def assert_same(actual: tuple, expected: tuple):
    """Bit-identical outputs (NaN equal to NaN, signed zeros alike)."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_array_equal(_bits(a), _bits(e))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8) if a.dtype.kind == "f" else a


def assert_matches_reference(rec, got: tuple, ref: tuple, dtype):
    """``got`` equals the float64 reference within the record's tolerance for ``dtype``
    (atol relative to the reference's largest magnitude; exact outputs exactly)."""
    rtol, atol = rec.tol[np.dtype(dtype).name]
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"output {i}: shape {g.shape} != reference {r.shape}"
        if i in rec.exact_outputs:
            np.testing.assert_array_equal(g, r)
            continue
        if g.ndim:  # a scalar (NCA's loss) is a Python float
            assert g.dtype == np.dtype(dtype), f"output {i}: dtype {g.dtype} != {dtype}"
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * max(scale, 1.0),
                                   err_msg=f"output {i}")


def _clear_error(rec, exc_info, *names):
    """A ValueError/TypeError whose message names every one of ``names``."""
    msg = str(exc_info.value)
    for name in names:
        assert name in msg, f"message does not name {name!r}: {msg}"


# ------------------------------------------------------------------ the table itself

def _public_ops():
    return [n for n in fi.__all__ if n not in ot.NOT_OPS] + ["nca_loss_grad"]


def test_every_public_op_has_a_record():
    names = {n for r in RECORDS for n in (r.name, *r.aliases)}
    missing = [n for n in _public_ops() if n not in names]
    assert not missing, f"public ops without an op record: {missing}"
    for r in RECORDS:
        public = getattr(fi, r.name, None)
        if isinstance(public, type):  # optimizers: the record runs the class
            assert r.inplace and public.__name__ == r.name
        elif r.name == "nca_loss_grad":
            assert "nca_loss_grad" in r.fn.__doc__
        else:
            assert public is r.fn, r.name
        for alias in r.aliases:
            assert getattr(fi, alias) is r.fn
        if r.backward:
            assert ot.record(r.backward).name == r.backward


def test_every_builtin_kernel_belongs_to_a_record():
    ot._nca()  # registers the NCA kernels
    covered = {k for r in RECORDS for k in r.kernels}
    ops = {e.op for e in registry.entries() if e.source == registry.BUILTIN}
    assert not ops - covered, f"registered built-in ops without an op record: {ops - covered}"


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: r.name)
def test_record_kernels_are_registered(rec):
    ot._nca()
    keys = {e.key for e in registry.entries()}
    for kernel in rec.kernels:
        for backend in rec.backends:
            for dtype in {ot.compute_dtype(d) for d in rec.dtypes}:  # half: float32 kernels
                assert (kernel, backend, dtype) in keys, (kernel, backend, dtype)


def test_record_lookup_by_alias_and_unknown_name():
    assert ot.record("interpolate") is ot.record("resize")
    with pytest.raises(KeyError, match="no op record named 'nope'"):
        ot.record("nope")


@pytest.mark.parametrize("rec", [r for r in RECORDS if r.ref_torch], ids=lambda r: r.name)
def test_numpy_reference_agrees_with_torch(rec, torch):
    s = _sample(rec, "float64")
    for a, b in zip(rec.reference(s, prefer_torch=False), rec.reference(s)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ reference

@pytest.mark.parametrize("rec,dtype", [_param(r, f"ref:{d}", d) for r in RECORDS for d in r.dtypes])
def test_reference(rec, dtype):
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    s = _sample(rec, dtype)
    assert_matches_reference(rec, _run(rec, s), rec.reference(s), dtype)


# ------------------------------------------------------------------ layouts

def _layouts(v: np.ndarray) -> dict:
    """Views holding ``v``'s values (zero-stride: row 0 repeated) with odd strides."""
    wide = np.zeros(v.shape[:-1] + (2 * v.shape[-1],), v.dtype)
    wide[..., ::2] = v
    ro = v.copy()
    ro.flags.writeable = False
    views = {"noncontig": wide[..., ::2], "negstride": v[::-1].copy()[::-1],
             "zerostride": np.broadcast_to(v[:1], v.shape), "readonly": ro}
    if v.ndim >= 2:
        views["fortran"] = np.asfortranarray(v)
    return views


LAYOUTS = ("noncontig", "negstride", "fortran", "zerostride", "readonly")


def _layout_cases():
    for rec in RECORDS:
        s = _sample(rec, "float64")
        for arg in rec.float_args:
            for lay in LAYOUTS:
                if lay == "fortran" and s.args[arg].ndim < 2:
                    continue
                yield _param(rec, f"layout:{arg}-{lay}", arg, lay)


@pytest.mark.parametrize("rec,arg,layout", list(_layout_cases()))
def test_layout(rec, arg, layout):
    """Odd strides and read-only inputs give the contiguous call's bits; inputs unchanged."""
    s = _sample(rec, "float64")
    view = _layouts(s.args[arg])[layout]
    before = view.copy()
    expected = _run(rec, s, **{arg: np.ascontiguousarray(view)})
    assert_same(_run(rec, s, **{arg: view}), expected)
    np.testing.assert_array_equal(view, before)


# ------------------------------------------------------------------ torch views

TORCH_VIEWS = ("transpose", "expand", "negbit", "conjbit", "requires_grad", "bfloat16")


def _torch_view(torch, v: np.ndarray, kind: str):
    tv = torch.from_numpy(v.copy())
    if kind == "transpose":
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(v, 0, -1))).transpose(0, -1)
    if kind == "expand":
        return torch.from_numpy(v[:1].copy()).expand(*v.shape)
    if kind == "negbit":
        view = torch.complex(torch.zeros_like(tv), -tv).conj().imag
        assert view.is_neg()
        return view
    if kind == "conjbit":
        return torch.complex(tv, tv).conj()
    if kind == "requires_grad":
        return tv.requires_grad_(True)
    return tv.to(torch.bfloat16)


def _torch_cases():
    for rec in RECORDS:
        for arg in rec.float_args:
            for kind in TORCH_VIEWS:
                yield _param(rec, f"torch:{arg}-{kind}", arg, kind)


@pytest.mark.parametrize("rec,arg,kind", list(_torch_cases()))
def test_torch_view(rec, arg, kind, torch):
    """torch views give the values they show (or a clear error for the negative bit and
    requires_grad); complex and bfloat16 tensors are refused naming the argument."""
    s = _sample(rec, "float64")
    targs = {k: (torch.from_numpy(v.copy()) if k in rec.float_args else v)
             for k, v in s.args.items()}
    view = _torch_view(torch, s.args[arg], kind)
    targs[arg] = view
    if kind == "bfloat16" and "bfloat16" in rec.dtypes:  # half storage: the NumPy call's bits
        pytest.importorskip("ml_dtypes")
        others = {k: torch.from_numpy(v.astype(np.float32)) for k, v in s.args.items()
                  if k in rec.float_args and k != arg}
        got = ot.outputs(rec.call(ot.Sample({**targs, **others}, s.kwargs)))
        plain = {k: (v.astype(np.float32) if k in others else v) for k, v in s.args.items()}
        plain[arg] = ot.outputs((view,))[0]   # torch's rounding of the float64 values
        assert_same(got, _run(rec, ot.Sample(plain, s.kwargs)))
        return
    if kind in ("conjbit", "bfloat16"):
        with pytest.raises(TypeError) as exc:
            rec.call(ot.Sample(targs, s.kwargs))
        _clear_error(rec, exc, arg)
        return
    v = s.args[arg]
    shown = np.broadcast_to(v[:1], v.shape) if kind == "expand" else v
    expected = _run(rec, s, **{arg: np.ascontiguousarray(shown)})
    if kind in ("negbit", "requires_grad"):
        try:
            got = ot.outputs(rec.call(ot.Sample(targs, s.kwargs)))
        except (TypeError, ValueError) as e:
            assert arg in str(e), f"message does not name {arg!r}: {e}"
            return
    else:
        got = ot.outputs(rec.call(ot.Sample(targs, s.kwargs)))
    assert_same(got, expected)


# ------------------------------------------------------------------ wrong dtypes

BAD_DTYPES = ("int32", "int64", "complex128", "float16")


@pytest.mark.parametrize("rec,arg,bad", [_param(r, f"dtype:{a}-{b}", a, b) for r in RECORDS
                                         for a in r.float_args for b in BAD_DTYPES
                                         if b not in r.dtypes])
def test_wrong_dtype(rec, arg, bad):
    s = _sample(rec, "float64")
    value = s.args[arg].astype(bad)
    with pytest.raises(TypeError) as exc:
        rec.call(s, **{arg: value})
    _clear_error(rec, exc, arg)


# ------------------------------------------------------------------ out=

OUT_CASES = ("good", "shape", "dtype", "noncontig", "scalar", "readonly", "overlap",
             "alias", "torch_in_numpy_out")


def _out_cases():
    for rec in RECORDS:
        if rec.takes_out:
            for case in OUT_CASES:
                for dtype in DTYPES:
                    yield _param(rec, f"out:{case}-{dtype}", case, dtype)


SENTINEL = 7.0


def _bad_out(case, shape, dtype, s, rec):
    """(out, the array that must stay unchanged) for a misuse case."""
    dtype = np.dtype(dtype)
    if case == "shape":
        out = np.full((shape[0] + 1,) + shape[1:], SENTINEL, dtype)
    elif case == "dtype":
        out = np.full(shape, SENTINEL, np.float32 if dtype == np.float64 else np.float64)
    elif case == "noncontig":
        wide = np.full(shape[:-1] + (2 * shape[-1],), SENTINEL, dtype)
        out = wide[..., ::2]
    elif case == "scalar":
        out = dtype.type(SENTINEL)
    elif case == "readonly":
        out = np.full(shape, SENTINEL, dtype)
        out.flags.writeable = False
    else:  # overlap: out starts one element into the first float input's buffer
        arg = rec.float_args[0]
        v = s.args[arg]
        size = int(np.prod(shape))
        base = np.full(max(v.size, size) + 1, SENTINEL, dtype)
        base[:v.size] = v.reshape(-1)
        s.args[arg] = base[:v.size].reshape(v.shape)
        out = base[1:1 + size].reshape(shape)
        return out, base
    return out, out


@pytest.mark.parametrize("rec,case,dtype", list(_out_cases()))
def test_out(rec, case, dtype):
    """A correct out is filled and returned; a wrong, read-only or partially overlapping
    one raises a clear error and is left unchanged; an out that is exactly an input works
    for the record's ``out_alias`` inputs (otherwise: works or a clear error)."""
    s = _sample(rec, dtype)
    (expected,) = _run(rec, s)
    if case == "good":
        out = np.full(expected.shape, SENTINEL, dtype)
        assert rec.call(s, out=out) is out
        assert_same((out,), (expected,))
    elif case == "alias":
        for arg in rec.float_args:
            v = s.args[arg]
            if v.shape != expected.shape:
                continue
            alias = v.copy()
            try:
                res = rec.call(s, out=alias, **{arg: alias})
            except (ValueError, TypeError) as e:
                assert arg not in rec.out_alias, f"out=exactly {arg} refused: {e}"
                assert rec.name in str(e)
                np.testing.assert_array_equal(alias, v)
                continue
            assert res is alias
            assert_same((alias,), (expected,))
    elif case == "torch_in_numpy_out":
        torch = pytest.importorskip("torch")
        targs = {k: (torch.from_numpy(v.copy()) if k in rec.float_args else v)
                 for k, v in s.args.items()}
        out = np.full(expected.shape, SENTINEL, dtype)
        try:
            res = rec.call(ot.Sample(targs, s.kwargs), out=out)
        except (ValueError, TypeError) as e:
            assert "out" in str(e)
            np.testing.assert_array_equal(out, SENTINEL)
            return
        assert res is out
        assert_same((out,), (expected,))
    else:
        out, guard = _bad_out(case, expected.shape, dtype, s, rec)
        before = np.array(guard, copy=True)
        with pytest.raises((ValueError, TypeError)) as exc:
            rec.call(s, out=out)
        _clear_error(rec, exc, rec.name, "out")
        np.testing.assert_array_equal(np.asarray(guard), before)


# ------------------------------------------------------------------ threads

def _large(rec, dtype):
    return _sample(rec, dtype, rec.large, key=("large",))


@pytest.mark.parametrize("rec,dtype", [_param(r, f"threads8:{d}", d) for r in RECORDS
                                       for d in DTYPES])
def test_eight_concurrent_callers_equal_serial(rec, dtype):
    s = _large(rec, dtype)
    serial = _run(rec, s)
    barrier = threading.Barrier(8)

    def call(_):
        barrier.wait()
        return _run(rec, s)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    with ThreadPoolExecutor(1) as pool:  # one worker thread alone
        results.append(pool.submit(_run, rec, s).result())
    for r in results:
        assert_same(r, serial)


def _concurrent_child() -> None:
    """Every op from 8 threads at once (the stderr of this process is checked)."""
    for rec in RECORDS:
        s = _large(rec, "float32")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: _run(rec, s), range(8)))


def test_concurrent_callers_print_no_warnings():
    """No library (e.g. OpenBLAS's 'Detect OpenMP Loop') writes warnings under 8 callers."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import test_op_matrix as m; m._concurrent_child()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]


@pytest.mark.parametrize("rec,dtype", [_param(r, f"numthreads:{d}", d) for r in RECORDS
                                       for d in DTYPES])
def test_bit_identical_for_one_and_two_threads(rec, dtype, threads):
    s = _large(rec, dtype)
    threads.set_num_threads(1)
    one = _run(rec, s)
    threads.set_num_threads(2)
    assert_same(_run(rec, s), one)


@pytest.mark.parametrize("rec,dtype", [_param(r, f"blasthreads:{d}", d) for r in RECORDS
                                       for d in DTYPES])
def test_bit_identical_for_one_and_two_blas_threads(rec, dtype, threads):
    from threadpoolctl import threadpool_limits
    s = _large(rec, dtype)
    threads.set_num_threads(2)
    with threadpool_limits(1, user_api="blas"):
        one = _run(rec, s)
    with threadpool_limits(2, user_api="blas"):
        two = _run(rec, s)
    assert_same(two, one)


# ------------------------------------------------------------------ special values, empty axes

KINDS = {"nan": (np.nan, np.nan), "posinf": (np.inf, np.inf), "neginf": (-np.inf, -np.inf),
         "huge": (1e30, 1e200), "subnormal": (1e-40, 1e-310)}
WHERE = ("one", "row", "all")


def _hostile_ids(rec):
    """Every (case id, dtype) of the subprocess group of ``rec``, in a fixed order."""
    ids = []
    for dtype in DTYPES:
        for arg in rec.float_args:
            for kind in KINDS:
                for where in WHERE:
                    ids.append((f"special:{arg}-{kind}-{where}-{dtype}", dtype))
        for case in rec.empty:
            ids.append((f"empty:{case}-{dtype}", dtype))
    return ids


def _hostile_sample(rec, case_id, dtype):
    """The inputs of one hostile case (rebuilt identically in the subprocess)."""
    test, detail = case_id.split(":")
    if test == "empty":
        return _sample(rec, dtype, rec.empty[detail.rsplit("-", 1)[0]], key=("empty",))
    arg, kind, where, _ = detail.split("-")
    s = _sample(rec, dtype, key=("special",))
    v = s.args[arg].copy()
    value = KINDS[kind][dtype == "float64"]
    if where == "all":
        v[...] = value
    elif where == "row":
        v[0] = value
    else:
        v.reshape(-1)[v.size // 2] = value
    s.args[arg] = v
    return s


def _child(op: str, start: int) -> None:
    """Run the hostile cases of ``op`` from index ``start``, one JSON line each."""
    rec = ot.record(op)
    for i, (case_id, dtype) in enumerate(_hostile_ids(rec)[start:], start):
        s = _hostile_sample(rec, case_id, dtype)
        try:
            outs = ot.outputs(rec.call(s))
            res = {"outs": [{"shape": list(o.shape), "dtype": o.dtype.name,
                             "data": o.reshape(-1).tolist()} for o in outs]}
        except Exception as e:  # reported, judged by the parent
            res = {"error": [type(e).__name__, str(e)]}
        print(json.dumps({"i": i, **res}), flush=True)


def _run_group(rec) -> dict:
    """All hostile cases of one op in a subprocess; a crash is recorded against the
    case that was running, and the rest resume in a fresh process."""
    n, start, results = len(_hostile_ids(rec)), 0, {}
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import test_op_matrix as m; m._child({rec.name!r}, int(sys.argv[1]))")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    while start < n:
        proc = subprocess.run([sys.executable, "-c", code, str(start)], capture_output=True,
                              text=True, timeout=120, env=env)
        for line in proc.stdout.splitlines():
            item = json.loads(line)
            results[item.pop("i")] = item
        start = max(results, default=start - 1) + 1
        if proc.returncode != 0 and start < n:
            results[start] = {"crash": [proc.returncode, proc.stderr[-2000:]]}
            start += 1
    return results


_GROUPS: dict = {}
_GROUPS_LOCK = threading.Lock()


def _group(rec) -> dict:
    """The subprocess results of ``rec`` (all ops' groups start together, 2 at a time)."""
    with _GROUPS_LOCK:
        if not _GROUPS:
            with ThreadPoolExecutor(2) as pool:
                _GROUPS.update(zip([r.name for r in RECORDS], pool.map(_run_group, RECORDS)))
    return _GROUPS[rec.name]


def _classes(a: np.ndarray) -> np.ndarray:
    return np.select([np.isnan(a), a == np.inf, a == -np.inf], [1, 2, 3], 0)


def _expected(rec, s, dtype):
    """The NumPy reference rounded to ``dtype``, or the ValueError it raises."""
    with np.errstate(all="ignore"):
        try:
            ref = rec.reference(s, prefer_torch=False)
        except ValueError as e:
            return e
        return tuple(r.astype(dtype) if i not in rec.exact_outputs else r
                     for i, r in enumerate(ref))


def _hostile_cases():
    for rec in RECORDS:
        for i, (case_id, dtype) in enumerate(_hostile_ids(rec)):
            yield _param(rec, case_id, i, case_id, dtype)


@pytest.mark.parametrize("rec,i,case_id,dtype", list(_hostile_cases()))
def test_hostile(rec, i, case_id, dtype):
    """No crash; only a ValueError/TypeError; the reference's special-value pattern
    (the record's ``special`` contract); empty axes give the reference's result."""
    res = _group(rec)[i]
    assert "crash" not in res, f"crashed (exit {res['crash'][0]}): {res['crash'][1]}"
    s = _hostile_sample(rec, case_id, dtype)
    expected = _expected(rec, s, dtype)
    if "error" in res:
        kind, msg = res["error"]
        assert kind in ("ValueError", "TypeError"), f"{kind}: {msg}"
        if case_id.startswith("empty:"):
            assert isinstance(expected, ValueError), f"raised {kind} for an empty input: {msg}"
        return
    assert not isinstance(expected, ValueError), f"no error; reference: {expected}"
    got = tuple(np.array(o["data"], dtype=o["dtype"]).reshape(o["shape"]) for o in res["outs"])
    if case_id.startswith("empty:"):
        assert_matches_reference(rec, got, expected, dtype)
        return
    arg = case_id.split(":")[1].split("-")[0]
    if rec.special is None or (rec.special_args is not None and arg not in rec.special_args):
        return
    for j, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape
        if j in rec.exact_outputs:
            np.testing.assert_array_equal(g, e, err_msg=f"output {j}")
        elif rec.special == "class":
            np.testing.assert_array_equal(_classes(g), _classes(e),
                                          err_msg=f"output {j}: class (0 finite, 1 NaN, "
                                                  f"2 +inf, 3 -inf)\n got {g}\n ref {e}")
        else:
            np.testing.assert_array_equal(np.isfinite(g), np.isfinite(e),
                                          err_msg=f"output {j}: finite\n got {g}\n ref {e}")
