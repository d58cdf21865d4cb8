"""fastinterp.optim: SGD, Adam, AdamW against torch.optim, state, errors, threads, CUDA."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastinterp as fi
from fastinterp.optim import SGD, Adam, AdamW
from conftest import TOL, TOL_ORACLE, assert_close

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
    dict(lr=0.02, maximize=True, weight_decay=0.2),
]
ADAM_CONFIGS = [
    dict(),
    dict(lr=0.05),
    dict(lr=0.01, betas=(0.5, 0.9)),
    dict(lr=0.01, betas=(0.3, 0.99), eps=1e-3),   # 1 - beta1 >= 0.5: the other lerp branch
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True),
    dict(lr=0.01, betas=(0.0, 0.0)),
]


def _torch_run(torch, cls, kw, p0s, grad_seq):
    tps = [torch.tensor(p.copy()) for p in p0s]
    opt = getattr(torch.optim, cls)(tps, **kw)
    for grads in grad_seq:
        for tp, g in zip(tps, grads):
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
    return [tp.numpy() for tp in tps], opt


def _ours_run(cls, kw, p0s, grad_seq):
    ps = [p.copy() for p in p0s]
    opt = cls(ps, **kw)
    for grads in grad_seq:
        opt.step(grads)
    return ps, opt


def _problem(rng, dtype, shapes=((7, 5), (33,)), steps=20):
    p0s = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grad_seq = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return p0s, grad_seq


def _check_vs_torch(torch, rng, cls, kw, dtype):
    p0s, grad_seq = _problem(rng, dtype)
    ours, _ = _ours_run(cls, kw, p0s, grad_seq)
    ref, _ = _torch_run(torch, cls.__name__, kw, p0s, grad_seq)
    table = TOL if dtype == np.float64 else TOL_ORACLE
    for a, b in zip(ours, ref):
        assert a.dtype == dtype
        assert_close(a, b, table=table)


# --- values against torch.optim ----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(torch, rng, kw, dtype):
    _check_vs_torch(torch, rng, SGD, kw, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=str)
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_matches_torch(torch, rng, cls, kw, dtype):
    _check_vs_torch(torch, rng, cls, kw, dtype)


@pytest.mark.parametrize("dtype, grads", [
    (np.float32, [1e-38, 1e-40, 1e-42, -3e-39]),
    (np.float64, [1e-308, 1e-315, -2e-320]),
])
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_subnormal_moments_match_torch(torch, cls, dtype, grads):
    # m and v leave the normal range: the update must not add roundings of its own
    # (scaling m down by sqrt(1 - beta2**t) first would make it subnormal, losing bits)
    g = np.array(grads, dtype)
    p = np.zeros_like(g)
    tp = torch.zeros(len(g), dtype=getattr(torch, np.dtype(dtype).name))
    opt, topt = cls([p]), getattr(torch.optim, cls.__name__)([tp])
    for _ in range(3):
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(p, tp.numpy(), rtol=4 * np.finfo(dtype).eps, atol=0)


def test_sgd_bit_identical_to_torch(torch, rng):
    # SGD's three torch ops map one to one onto the kernel's: equal to the last bit.
    p0s, grad_seq = _problem(rng, np.float64)
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)
    ours, _ = _ours_run(SGD, kw, p0s, grad_seq)
    ref, _ = _torch_run(torch, "SGD", kw, p0s, grad_seq)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_param_groups_and_lr_changes_match_torch(torch, rng):
    p0s, grad_seq = _problem(rng, np.float64, shapes=((4, 3), (9,), (2, 2)))
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.2, "betas": (0.8, 0.95)}]
    ps = [p.copy() for p in p0s]
    ours = Adam(groups(ps), lr=0.01, amsgrad=True)
    tps = [torch.tensor(p.copy()) for p in p0s]
    ref = torch.optim.Adam(groups(tps), lr=0.01, amsgrad=True)
    for k, grads in enumerate(grad_seq):
        if k == 10:  # a scheduler changing the learning rate mid-way
            ours.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.003
        grads = [None if (k % 3 == 0 and i == 1) else g for i, g in enumerate(grads)]
        ours.step(grads)
        for tp, g in zip(tps, grads):
            tp.grad = None if g is None else torch.tensor(g)
        ref.step()
    for a, b in zip(ps, tps):
        assert_close(a, b.numpy())


def test_state_matches_torch(torch, rng):
    p0s, grad_seq = _problem(rng, np.float64, steps=5)
    _, ours = _ours_run(Adam, dict(lr=0.01, amsgrad=True), p0s, grad_seq)
    _, ref = _torch_run(torch, "Adam", dict(lr=0.01, amsgrad=True), p0s, grad_seq)
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert mine["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]
    for i in range(2):
        assert mine["state"][i]["step"] == float(theirs["state"][i]["step"]) == 5.0
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert_close(mine["state"][i][key], theirs["state"][i][key].numpy())


# --- hand-computed cases -------------------------------------------------------------

def test_sgd_hand_computed():
    w = np.array([1.0, -2.0])
    opt = SGD([w], lr=0.1, momentum=0.5, dampening=0.5)
    opt.step([np.array([1.0, 2.0])])           # buf = g
    np.testing.assert_allclose(w, [0.9, -2.2], rtol=0, atol=1e-15)
    opt.step([np.array([1.0, 2.0])])           # buf = 0.5*buf + 0.5*g = g
    np.testing.assert_allclose(w, [0.8, -2.4], rtol=0, atol=1e-15)


def test_adam_first_step_is_lr_times_sign():
    w = np.array([3.0, -1.0, 0.5], np.float32)
    Adam([w], lr=0.25, eps=0.0).step([np.array([10.0, -0.1, 2.0], np.float32)])
    np.testing.assert_allclose(w, [2.75, -0.75, 0.25], rtol=1e-6)


def test_adamw_decay_hand_computed():
    w = np.array([2.0])
    AdamW([w], lr=0.1, weight_decay=0.5).step([np.array([0.0])])  # m = 0: decay only
    assert w[0] == 2.0 * (1 - 0.1 * 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_decay_factor_is_rounded_as_torch_does(dtype):
    """AdamW multiplies by ``1 - lr * weight_decay`` rounded twice in double, as torch does
    (``param.mul_(1 - lr * wd)``), on every CPU variant: a fused multiply-add gave
    -5.6e-17 instead of 0 at lr = 10, wd = 0.1 (an inf parameter became -inf, not NaN)
    and last-bit differences elsewhere."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0.05, 20.0, 64)
    pairs = [(10.0, 0.1), (3.0, 1 / 3)] + [(1 / v, float(v)) for v in x] + \
        [(float(a), float(b)) for a, b in rng.uniform(1e-3, 1.0, (64, 2))]
    for lr, wd in pairs:
        w = np.array([np.inf, 3.0, -1.5, 1e-3], dtype)
        with np.errstate(invalid="ignore"):                       # inf * 0
            want = w * dtype(1.0 - lr * wd)
        AdamW([w], lr=lr, weight_decay=wd).step([np.zeros(4, dtype)])   # m = 0: decay only
        np.testing.assert_array_equal(w, want, err_msg=f"lr={lr!r}, weight_decay={wd!r}")


# --- state_dict ----------------------------------------------------------------------

@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     (Adam, dict(lr=0.01, amsgrad=True)),
                                     (AdamW, dict(lr=0.01))])
def test_state_dict_round_trip(rng, cls, kw):
    p0s, grad_seq = _problem(rng, np.float64)
    straight, _ = _ours_run(cls, kw, p0s, grad_seq)
    ps = [p.copy() for p in p0s]
    opt = cls(ps, **kw)
    for grads in grad_seq[:10]:
        opt.step(grads)
    snap = opt.state_dict()
    frozen = {i: {k: (v.copy() if hasattr(v, "shape") else v) for k, v in s.items()}
              for i, s in snap["state"].items()}
    opt.step(grad_seq[10])                      # a snapshot is not changed by later steps
    for i, s in snap["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(v, frozen[i][k])
    # roll the parameters back to where the snapshot was taken
    ps_at_snap = [p.copy() for p in p0s]
    replay = cls(ps_at_snap, **kw)
    for grads in grad_seq[:10]:
        replay.step(grads)
    fresh = cls(ps_at_snap, **{k: v for k, v in kw.items() if k != "lr"}, lr=123.0)
    fresh.load_state_dict(snap)
    assert fresh.param_groups[0]["lr"] == kw["lr"]
    for grads in grad_seq[10:]:
        fresh.step(grads)
    for a, b in zip(ps_at_snap, straight):
        np.testing.assert_array_equal(a, b)


def test_state_dict_layout():
    w = np.zeros((2, 3), np.float32)
    opt = SGD([w], lr=0.1, momentum=0.9)
    assert opt.state_dict() == {"state": {}, "param_groups": [
        dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0,
             maximize=False, params=[0])]}
    opt.step([np.ones((2, 3), np.float32)])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert buf.shape == (2, 3) and buf.dtype == np.float32
    np.testing.assert_array_equal(buf, 1.0)


def test_no_momentum_sgd_keeps_no_state():
    w = np.ones(3)
    opt = SGD([w], lr=0.5)
    opt.step([np.ones(3)])
    assert opt.state_dict()["state"] == {}
    np.testing.assert_array_equal(w, 0.5)


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, exc, match", [
    (lambda: SGD([], lr=0.1), ValueError, "params must not be empty"),
    (lambda: SGD(np.zeros(3), lr=0.1), TypeError, "params must be a sequence of arrays"),
    (lambda: SGD([np.zeros(3, np.int64)], lr=0.1), TypeError, r"params\[0\] must have dtype float32 or float64"),
    (lambda: SGD([np.zeros(3, np.float16)], lr=0.1), TypeError, "float16"),
    (lambda: SGD([np.zeros((4, 4))[:, ::2]], lr=0.1), ValueError, "C-contiguous"),
    (lambda: SGD([np.broadcast_to(np.zeros(3), (3,))], lr=0.1), ValueError, "writable"),
    (lambda: SGD([[1.0, 2.0]], lr=0.1), TypeError, r"params\[0\] must be an array"),
    (lambda: SGD([np.zeros(3)], lr=-0.1), ValueError, r"lr must be a finite number >= 0 \(a Python number or 0-d array\); got -0.1"),
    (lambda: SGD([np.zeros(3)], lr=float("nan")), ValueError, "lr must be a finite number"),
    (lambda: SGD([np.zeros(3)], lr=0.1, momentum=-1), ValueError, "momentum"),
    (lambda: SGD([np.zeros(3)], lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda: SGD([np.zeros(3)], lr=0.1, nesterov=True), ValueError, "nesterov=True requires"),
    (lambda: SGD([np.zeros(3)], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     ValueError, "dampening == 0"),
    (lambda: Adam([np.zeros(3)], betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
    (lambda: Adam([np.zeros(3)], betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda: Adam([np.zeros(3)], betas=0.9), ValueError, "betas must be two numbers"),
    (lambda: Adam([np.zeros(3)], betas=("0.9", "0.999")), ValueError, "betas must be two numbers"),
    (lambda: AdamW([np.zeros(3)], betas=(False, 0.999)), ValueError, "betas must be two numbers"),
    (lambda: Adam([np.zeros(3)], betas=(0.9, 0.99, 0.9)), ValueError, "betas must be two numbers"),
    (lambda: Adam([np.zeros(3)], eps=-1e-8), ValueError, "eps"),
    (lambda: Adam([np.zeros(3)], lr=True), ValueError, "lr"),
    (lambda: Adam([{"params": [np.zeros(3)], "momentum": 0.9}]), ValueError, "group keys"),
    (lambda: Adam([{"lr": 0.1}]), TypeError, "'params'"),
    (lambda: (lambda a: Adam([a, a]))(np.zeros(3)), ValueError, "appears twice"),
])
def test_constructor_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1)), (Adam, {}), (AdamW, {})])
@pytest.mark.parametrize("params, given", [
    (None, "NoneType"), (3, "int"), (2.5, "float"), ("abc", "str"), (b"ab", "bytes"),
    ({"params": [np.zeros(3)]}, "dict"), (np.zeros(3), "ndarray"), (np.float64(1.0), "float64"),
])
def test_params_that_are_not_a_sequence_of_arrays(cls, kw, params, given):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: params must be a sequence of arrays "
                                        rf"or of parameter group dicts; got {given}\.$"):
        cls(params, **kw)


@pytest.mark.parametrize("arrays, given", [(None, "NoneType"), (3, "int"), ("ab", "str"),
                                           ({"a": np.zeros(3)}, "dict")])
def test_group_params_that_are_not_a_sequence_of_arrays(arrays, given):
    with pytest.raises(TypeError, match=rf"^Adam: a parameter group's 'params' must be a sequence "
                                        rf"of arrays; got {given}\.$"):
        Adam([{"params": arrays}])
    opt = Adam([np.zeros(2)])
    with pytest.raises(TypeError, match="a parameter group's 'params' must be a sequence"):
        opt.add_param_group({"params": arrays})


@pytest.mark.parametrize("cls, kw, flag", [
    (SGD, dict(lr=0.1, momentum=0.9), "nesterov"), (SGD, dict(lr=0.1), "maximize"),
    (Adam, {}, "amsgrad"), (Adam, {}, "maximize"), (AdamW, {}, "amsgrad"), (AdamW, {}, "maximize"),
])
@pytest.mark.parametrize("bad", ["no", "", [1], 1.0, None, np.array([True])])
def test_flags_must_be_bools(cls, kw, flag, bad):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: {flag} must be a bool \(or an int\); got "):
        cls([np.zeros(3)], **kw, **{flag: bad})
    opt = cls([np.zeros(3)], **kw)
    opt.param_groups[0][flag] = bad                       # set later, as a scheduler might
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: {flag} must be a bool"):
        opt.step([np.ones(3)])


def test_flags_take_numpy_bools():
    w = np.ones(3)
    SGD([w], lr=0.1, momentum=0.9, nesterov=np.True_, maximize=np.False_).step([np.ones(3)])
    np.testing.assert_allclose(w, 1 - 0.1 * 1.9)
    Adam([np.ones(2)], amsgrad=np.bool_(True)).step([np.ones(2)])


def test_params_may_be_any_iterable_of_arrays():
    a, b = np.zeros(2), np.zeros(3)
    assert len(Adam(iter([a, b])).param_groups[0]["params"]) == 2
    assert len(SGD((a, b), lr=0.1).param_groups[0]["params"]) == 2


@pytest.mark.parametrize("grads, exc, match", [
    (lambda: [np.ones(3)], ValueError, r"one entry per parameter \(2\); got 1"),
    (lambda: np.ones(3), TypeError, "grads must be a list"),
    (lambda: [np.ones(3), np.ones(4)], ValueError, r"grads\[1\] must have the shape of params\[1\] \(5,\); got \(4,\)"),
    (lambda: [np.ones(3), np.ones(5, np.float32)], TypeError, r"grads\[1\] must have the dtype"),
    (lambda: [np.ones(3), "x"], TypeError, r"grads\[1\] must be an array or None"),
    (lambda: [np.ones(3), np.ones(5, np.int32)], TypeError, "float32 or float64"),
])
def test_step_errors_touch_nothing(grads, exc, match):
    a, b = np.ones(3), np.ones(5)
    opt = Adam([a, b], lr=0.1)
    with pytest.raises(exc, match=match):
        opt.step(grads())
    np.testing.assert_array_equal(a, 1.0)       # grads[0] was fine, but nothing moved
    assert opt.state == {}


def test_step_rechecks_hyperparameters():
    w = np.ones(3)
    opt = SGD([w], lr=0.1)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(w, 1.0)


def test_load_state_dict_errors():
    w = np.ones(3)
    opt = Adam([w], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="group sizes must match"):
        Adam([np.ones(3), np.ones(2)]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        Adam([np.ones(4)]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"state_dict must be a dict with 'state'.*got a dict "
                                         r"with keys \['x'\]"):
        Adam([np.ones(3)]).load_state_dict({"x": 1})
    for bad in (np.float32(1), np.zeros(()), np.zeros(0), None, [1]):
        with pytest.raises(ValueError, match=r"state_dict must be a dict with 'state'"):
            Adam([np.ones(3)]).load_state_dict(bad)
    del sd["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match="missing"):
        Adam([np.ones(3)]).load_state_dict(sd)


def test_amsgrad_switched_on_late_is_an_error():
    v, w = np.ones(3), np.ones(3)
    opt = Adam([{"params": [v], "amsgrad": True}, {"params": [w]}], lr=0.1)
    opt.step([np.ones(3), np.ones(3)])
    opt.param_groups[1]["amsgrad"] = True
    before = v.copy()
    with pytest.raises(ValueError, match="amsgrad must be set before the first step"):
        opt.step([np.ones(3), np.ones(3)])
    np.testing.assert_array_equal(v, before)     # checked before anything moved


# --- shapes, dtypes, edge values --------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64]),
       amsgrad=st.booleans(), scale=st.sampled_from([0.0, 1e-30, 1.0, 1e20]))
def test_adam_shapes_dtypes_edges(torch, shape, dtype, amsgrad, scale):
    rng = np.random.default_rng(len(shape))
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [(rng.standard_normal(shape) * scale).astype(dtype) for _ in range(3)]
    p = p0.copy()
    opt = Adam([p], lr=0.1, amsgrad=amsgrad)
    tp = torch.tensor(p0.copy())
    ref = torch.optim.Adam([tp], lr=0.1, amsgrad=amsgrad)
    for g in grads:
        opt.step([g])
        tp.grad = torch.tensor(g)
        ref.step()
    assert p.shape == tuple(shape) and p.dtype == dtype
    assert_close(p, tp.numpy(), table=TOL_ORACLE)


def test_noncontiguous_grad_is_accepted():
    w, v = np.zeros(4), np.zeros(4)
    g = np.arange(8.0)[::2]
    SGD([w], lr=1.0).step([g])
    SGD([v], lr=1.0).step([np.ascontiguousarray(g)])
    np.testing.assert_array_equal(w, v)



@pytest.mark.parametrize("opt_cls", [SGD, Adam])
@pytest.mark.parametrize("shift", [1, 2, -1, -3])
def test_grad_partially_overlapping_its_parameter_is_refused(opt_cls, shift):
    buf = np.arange(1.0, 13.0)
    w = buf[max(shift, 0):][:9]
    g = buf[max(-shift, 0):][:9]         # w shifted by `shift` elements
    before = buf.copy()
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with its parameter"):
        opt_cls([w], lr=0.1).step([g])
    np.testing.assert_array_equal(buf, before)


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
@pytest.mark.parametrize("view", ["reversed", "strided", "byteswapped"])
def test_grad_copied_from_a_view_of_a_parameter_is_refused(opt_cls, view):
    """A gradient that must be copied for the kernel (strided, byte-swapped) and shares
    memory with a stepped parameter is refused like a contiguous one: the check sees
    the caller's array, not the copy."""
    buf = np.arange(1.0, 13.0)
    w = buf[:6]
    g = {"reversed": w[::-1], "strided": buf[::2],
         "byteswapped": w.view(w.dtype.newbyteorder())}[view]
    before = buf.copy()
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with its parameter"):
        opt_cls([w], lr=0.1).step([g])
    np.testing.assert_array_equal(buf, before)


def test_grad_sharing_memory_with_another_parameter_is_refused():
    a, b = np.ones(4), np.arange(4.0)
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with params\[0\]"):
        opt.step([np.ones(4), a])               # a is stepped before grads[1] is read
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[1\]"):
        opt.step([b, np.ones(4)])
    np.testing.assert_array_equal(a, 1.0)
    np.testing.assert_array_equal(b, np.arange(4.0))
    assert opt.state == {}


def test_parameters_sharing_memory_are_refused_at_step():
    buf = np.zeros(10)
    opt = SGD([buf[:6], buf[4:]], lr=1.0)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        opt.step([np.ones(6), np.ones(6)])
    np.testing.assert_array_equal(buf, 0.0)


def _with_state(opt_cls, key, w, grad):
    """An optimizer over ``w`` after one step, so that state ``key`` exists."""
    kw = {"momentum": 0.9} if opt_cls is SGD else {}
    opt = opt_cls([w], lr=0.1, **kw)
    opt.step([grad])
    return opt


STATE_KEYS = [(SGD, "momentum_buffer"), (Adam, "exp_avg"), (Adam, "exp_avg_sq"),
              (AdamW, "exp_avg")]


@pytest.mark.parametrize("opt_cls,key", STATE_KEYS)
@pytest.mark.parametrize("shift", [1, -2, 0])
def test_state_buffer_sharing_memory_with_its_parameter_is_refused(opt_cls, key, shift):
    """opt.state is the caller's to edit: a buffer that shares memory with the parameter
    (shifted, or exactly it) would make the update depend on its order and the thread
    count, as torch.optim refuses it."""
    buf = np.linspace(1.0, 2.0, 12)
    w = buf[max(shift, 0):][:9]
    opt = _with_state(opt_cls, key, w, np.ones(9))
    opt.state[0][key] = buf[max(-shift, 0):][:9]
    before, state = buf.copy(), {k: np.copy(v) for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match=rf"state\[0\]\['{key}'\] shares memory with "
                                         r"params\[0\]"):
        opt.step([np.ones(9)])
    np.testing.assert_array_equal(buf, before)
    for k, v in state.items():
        np.testing.assert_array_equal(opt.state[0][k], v)


@pytest.mark.parametrize("opt_cls,key", STATE_KEYS)
def test_state_buffer_sharing_memory_with_a_gradient_or_buffer_is_refused(opt_cls, key):
    w, v = np.ones(6), np.full(6, 2.0)
    kw = {"momentum": 0.9} if opt_cls is SGD else {}
    opt = opt_cls([w, v], lr=0.1, **kw)
    g0, g1 = np.full(6, 0.5), np.full(6, 0.25)
    opt.step([g0, g1])
    w_before, v_before = w.copy(), v.copy()
    opt.state[0][key] = g1                                   # another parameter's gradient
    with pytest.raises(ValueError, match=rf"state\[0\]\['{key}'\] shares memory with "
                                         r"grads\[1\]"):
        opt.step([g0, g1])
    opt.state[0][key] = g0                                   # its own gradient, exactly
    with pytest.raises(ValueError, match=rf"state\[0\]\['{key}'\] shares memory with "
                                         r"grads\[0\]"):
        opt.step([g0, g1])
    opt.state[0][key] = opt.state[1][key]                    # another parameter's buffer
    with pytest.raises(ValueError, match=rf"state\[0\]\['{key}'\] shares memory with "
                                         rf"state\[1\]\['{key}'\]"):
        opt.step([g0, g1])
    np.testing.assert_array_equal(w, w_before)            # nothing stepped
    np.testing.assert_array_equal(v, v_before)


def test_grad_that_is_its_parameter_or_a_disjoint_view_steps():
    w = np.arange(5.0)
    SGD([w], lr=0.5).step([w])                 # exactly its own parameter: read, then written
    np.testing.assert_array_equal(w, np.arange(5.0) * 0.5)
    buf = np.arange(8.0)
    w, g = buf[:4], buf[4:]                     # one buffer, disjoint halves
    SGD([w], lr=1.0).step([g])
    np.testing.assert_array_equal(w, np.arange(4.0) - np.arange(4.0, 8.0))
    inter = np.arange(8.0)
    w2 = np.zeros(4)
    SGD([w2], lr=1.0).step([inter[::2]])      # strided grad, copied once
    np.testing.assert_array_equal(w2, -inter[::2])


def test_torch_tensors_updated_in_place(torch):
    t = torch.ones(5, dtype=torch.float64)
    opt = Adam([t], lr=0.5)
    opt.step([torch.full((5,), 2.0, dtype=torch.float64)])
    np.testing.assert_allclose(t.numpy(), 0.5)


@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9)),
                                     (Adam, dict(lr=0.01, amsgrad=True)), (AdamW, dict(lr=0.01))])
def test_torch_parameters_keep_torch_state(torch, rng, cls, kw):
    """State buffers and state_dict() copies have the parameters' array type (torch
    tensors for torch parameters, as torch.optim keeps them); a snapshot restores into a
    fresh optimizer, and the steps equal those on NumPy parameters bit for bit."""
    start = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
    w, v = torch.from_numpy(start.copy()), start.copy()
    opt, ref = cls([w], **kw), cls([v], **kw)
    for g in grads[:2]:
        opt.step([torch.from_numpy(g)])
        ref.step([g])
    buffers = [value for value in opt.state[0].values() if hasattr(value, "shape")]
    assert buffers and all(isinstance(b, torch.Tensor) for b in buffers)
    snapshot = opt.state_dict()
    saved = [value for value in snapshot["state"][0].values() if hasattr(value, "shape")]
    assert all(isinstance(b, torch.Tensor) for b in saved)
    assert not any(np.shares_memory(s.numpy(), b.numpy()) for s in saved for b in buffers)
    again = cls([w], **kw)
    again.load_state_dict(snapshot)
    for g in grads[2:]:
        again.step([torch.from_numpy(g)])
        ref.step([g])
    np.testing.assert_array_equal(w.numpy(), v)


def test_registry_reports_the_kernels():
    w = np.ones(3, np.float32)
    Adam([w]).step([np.ones(3, np.float32)])
    assert fi.last_kernel().key == ("adam_step", "cpu", "float32")
    SGD([w], lr=0.1).step([np.ones(3, np.float32)])
    assert fi.last_kernel().key == ("sgd_step", "cpu", "float32")


# --- threads ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                                     (AdamW, dict(lr=0.01))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_across_threads(threads, rng, cls, kw, dtype):
    n = 200_003  # several OpenMP chunks and a ragged tail
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    results = []
    for t in (1, 2):
        threads.set_num_threads(t)
        p = p0.copy()
        opt = cls([p], **kw)
        for g in grads:
            opt.step([g])
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


# --- many arrays in one step --------------------------------------------------------------

MANY_SHAPES = [(0,), (1,), (3, 5), (7,), (70_001,), (2, 0, 3), (), (33, 2)]


@pytest.mark.parametrize("cls, kw", [(c, k) for k in SGD_CONFIGS for c in (SGD,)]
                         + [(c, k) for k in ADAM_CONFIGS for c in (Adam, AdamW)])
def test_many_arrays_in_one_step_match_one_array_at_a_time(rng, cls, kw):
    """The CPU step runs a group's arrays of one dtype in one kernel call: bit for bit
    what a step of each array alone gives (parameters and state), for every
    configuration, arrays of size 0 and 1, 0-d arrays, several OpenMP chunks, mixed
    dtypes in a group, and arrays at different step counts (None gradients)."""
    params = [rng.standard_normal(s).astype((np.float32, np.float64)[j % 2])
              for j, s in enumerate(MANY_SHAPES)]
    grad_seq = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params]
                for _ in range(3)]
    skip = {(0, 3), (1, 3), (1, 4)}            # (step, array): no gradient then

    def grads_at(t, js):
        return [None if (t, j) in skip else grad_seq[t][j] for j in js]

    together = [p.copy() for p in params]
    opt = cls(together, **kw)
    for t in range(len(grad_seq)):
        opt.step(grads_at(t, range(len(params))))
    for j, p0 in enumerate(params):
        p = p0.copy()
        single = cls([p], **kw)
        for t in range(len(grad_seq)):
            single.step(grads_at(t, [j]))
        np.testing.assert_array_equal(together[j], p, err_msg=f"array {j}")
        assert opt.state.get(j, {}).keys() == single.state.get(0, {}).keys()
        for key, value in single.state.get(0, {}).items():
            np.testing.assert_array_equal(opt.state[j][key], value, err_msg=f"{j} {key}")


@pytest.mark.parametrize("source", ["test-spy", None])
def test_a_registered_kernel_still_steps_each_array(source):
    """A kernel registered over the built-in one gets every array (one call each); the
    built-in batch is only for the built-in kernel itself, whatever the entry's source
    (register's default source is "builtin": such a kernel was skipped, silently)."""
    from fastinterp import _registry as registry
    calls = []

    def spy(param, grad, buf, lr, *args):
        calls.append(param.size)
        param -= lr * grad

    kw = {} if source is None else {"source": source}
    entry = registry.register("sgd_step", "cpu", "float64", spy, **kw)
    try:
        ws = [np.ones(3), np.ones(5), np.ones(2, np.float32), np.ones(4)]
        SGD(ws, lr=0.5).step([np.ones(3), np.ones(5), np.ones(2, np.float32), np.ones(4)])
    finally:
        with registry._lock:        # this entry alone (its source may be "builtin")
            registry._table[entry.key].remove(entry)
            registry._resolved.pop(entry, None)
    assert calls == [3, 5, 4]
    for w in ws:
        np.testing.assert_array_equal(w, 0.5)


def test_state_follows_parameter_order_with_mixed_dtypes(rng):
    """The batch of each dtype made the state (and state_dict) list float32 parameters
    before float64 ones; torch.optim lists them in parameter order."""
    ws = [np.ones(3, np.float32), np.ones(2), np.ones(4, np.float32), np.ones(1)]
    opt = Adam(ws)
    opt.step([np.ones_like(w) for w in ws])
    assert list(opt.state) == [0, 1, 2, 3]
    assert list(opt.state_dict()["state"]) == [0, 1, 2, 3]


# --- CUDA (the simulator on CPU machines) --------------------------------------------------

@pytest.mark.cudasim
@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
                                     (SGD, dict(lr=0.1, momentum=0.5, dampening=0.2, maximize=True)),
                                     (Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
                                     (Adam, dict(lr=0.05, betas=(0.2, 0.9), maximize=True)),
                                     (AdamW, dict(lr=0.05))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_matches_cpu(cuda, rng, cls, kw, dtype):
    p0 = rng.standard_normal((5, 7)).astype(dtype)
    grads = [rng.standard_normal((5, 7)).astype(dtype) for _ in range(3)]
    p_cpu = p0.copy()
    cpu = cls([p_cpu], **kw)
    p_dev = cuda.to_device(p0.copy())
    dev = cls([p_dev], **kw)
    for g in grads:
        cpu.step([g])
        dev.step([cuda.to_device(g)])
        assert fi.last_kernel().key[:2] == (cls._op, "cuda")
    out = p_dev.copy_to_host()
    assert out.dtype == dtype
    assert_close(out, p_cpu, table=TOL_ORACLE)
    snap = dev.state_dict()
    key = "momentum_buffer" if cls is SGD else "exp_avg"
    assert_close(snap["state"][0][key].copy_to_host(), cpu.state_dict()["state"][0][key],
                 table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_state_dict_round_trip(cuda, rng):
    p0 = rng.standard_normal(9)
    grads = [rng.standard_normal(9) for _ in range(4)]
    a = cuda.to_device(p0.copy())
    opt = Adam([a], lr=0.1)
    for g in grads[:2]:
        opt.step([cuda.to_device(g)])
    snap = opt.state_dict()
    b = cuda.to_device(a.copy_to_host())
    other = Adam([b], lr=0.1)
    other.load_state_dict(snap)
    for g in grads[2:]:
        opt.step([cuda.to_device(g)])
        other.step([cuda.to_device(g)])
    np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host())


@pytest.mark.cudasim
def test_cuda_mixed_devices_rejected(cuda):
    opt = SGD([cuda.to_device(np.zeros(3))], lr=0.1)
    with pytest.raises(fi.BackendMismatchError):
        opt.step([np.ones(3)])


@settings(max_examples=20, deadline=None)
@given(momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.3]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 0.1]),
       maximize=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       n=st.integers(1, 70))
def test_sgd_options_vs_torch(torch, momentum, dampening, nesterov, weight_decay, maximize,
                              dtype, n):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    kw = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
              weight_decay=weight_decay, maximize=maximize)
    rng = np.random.default_rng(n)
    p0s, grad_seq = _problem(rng, dtype, shapes=((n,),), steps=5)
    ours, _ = _ours_run(SGD, kw, p0s, grad_seq)
    ref, _ = _torch_run(torch, "SGD", kw, p0s, grad_seq)
    np.testing.assert_array_equal(ours[0], ref[0])


# --- non-finite parameters and gradients: torch.optim's arithmetic -------------------

_SPECIAL = np.array([np.inf, -np.inf, np.nan, 1.5, -0.25, 0.0, 1e30, -1e-30])

NONFINITE_CONFIGS = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, maximize=True)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (Adam, dict(lr=0.1)),
    (Adam, dict(lr=0.1, weight_decay=0.1)),
    (Adam, dict(lr=0.1, amsgrad=True, maximize=True)),
    (Adam, dict(lr=0.1, betas=(0.3, 0.9))),           # the other lerp branch
    (AdamW, dict(lr=0.1)),
    (AdamW, dict(lr=0.1, weight_decay=0.0)),
    (AdamW, dict(lr=0.1, amsgrad=True)),
]


def _special_problem(dtype, steps=3):
    """Every (param, grad) pair of special values, then grads that turn special later."""
    p, g = (a.ravel() for a in np.meshgrid(_SPECIAL, _SPECIAL, indexing="ij"))
    p0 = p.astype(dtype)
    grad_seq = [g.astype(dtype)]
    for k in range(1, steps):
        grad_seq.append(np.roll(g, 3 * k).astype(dtype))
    return [p0], [[gs] for gs in grad_seq]


def _same_special(a, b):
    """NaN where NaN, the same infinities, finite values close."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    inf = np.isinf(a) | np.isinf(b)
    np.testing.assert_array_equal(a[inf], b[inf])
    fin = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("impl", [dict(foreach=False), dict(foreach=True), dict(fused=True)],
                         ids=["single", "foreach", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kw", NONFINITE_CONFIGS, ids=lambda v: str(v) if isinstance(v, dict) else v.__name__)
def test_nonfinite_params_and_grads_match_torch(torch, cls, kw, dtype, impl):
    p0s, grad_seq = _special_problem(dtype)
    ours, opt = _ours_run(cls, kw, p0s, grad_seq)
    ref, ref_opt = _torch_run(torch, cls.__name__, {**kw, **impl}, p0s, grad_seq)
    _same_special(ours[0], ref[0])
    for key, value in opt.state_dict()["state"].get(0, {}).items():
        if hasattr(value, "shape"):
            _same_special(value, ref_opt.state_dict()["state"][0][key].numpy())


@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1)), (SGD, dict(lr=0.1, momentum=0.5)),
                                     (Adam, dict(lr=0.1)), (AdamW, dict(lr=0.1, weight_decay=0))])
def test_infinite_param_stays_infinite_without_weight_decay(cls, kw):
    w = np.array([np.inf, -np.inf, 1.0])
    opt = cls([w], **kw)
    for _ in range(3):
        opt.step([np.array([1.0, -2.0, 0.5])])
    assert w[0] == np.inf and w[1] == -np.inf and np.isfinite(w[2])


# --- parameters whose storage the caller replaces ------------------------------------

@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.1)),
                                     (AdamW, dict(lr=0.1, amsgrad=True))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_follows_replaced_torch_storage(torch, cls, kw, dtype):
    dt = getattr(torch, dtype)
    p = torch.nn.Parameter(torch.ones(6, dtype=dt), requires_grad=False)
    ref = torch.nn.Parameter(torch.ones(6, dtype=dt))
    ours, theirs = cls([p], **kw), getattr(torch.optim, cls.__name__)([ref], **kw)
    g = torch.linspace(-1, 1, 6, dtype=dt)
    for k in range(4):
        if k == 2:   # the common idiom: swap in new storage of the same shape
            old = p.data
            snapshot = old.clone()
            p.data = torch.full((6,), 3.0, dtype=dt)
            with torch.no_grad():
                ref.data = torch.full((6,), 3.0, dtype=dt)
        ours.step([g])
        ref.grad = g.clone()
        theirs.step()
    torch.testing.assert_close(p.data, ref.data.detach())
    assert torch.equal(old, snapshot)             # the released storage was not written


def test_step_follows_resized_torch_tensor_and_refuses_new_shapes(torch):
    p = torch.ones(4, dtype=torch.float64)
    opt = Adam([p], lr=0.1)
    opt.step([torch.ones(4, dtype=torch.float64)])
    p.resize_(4000)            # same shape afterwards? no: a new shape must be refused
    with pytest.raises(ValueError, match=r"Adam.step: params\[0\] must keep its shape \(4,\).*got \(4000,\)"):
        opt.step([torch.ones(4000, dtype=torch.float64)])
    p.resize_(4)               # back to its shape (possibly in new storage): steps again
    before = p.clone()
    opt.step([torch.ones(4, dtype=torch.float64)])
    assert bool((p < before).all())


def test_replaced_storage_with_other_dtype_is_refused(torch):
    p = torch.ones(4, dtype=torch.float64)
    opt = SGD([p], lr=0.1)
    p.data = torch.ones(4, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"SGD.step: params\[0\] must keep its dtype float64 \(its storage was "
                                      r"replaced .*\); got float32"):
        opt.step([torch.ones(4, dtype=torch.float32)])
    np.testing.assert_array_equal(p.numpy(), 1.0)


# --- clear errors (issue: hostile inputs) -------------------------------------------

def test_torch_state_dict_is_refused_with_the_expected_format(torch):
    t = torch.ones(3, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([t], lr=0.1)
    t.grad = torch.ones(3, dtype=torch.float64)
    ref.step()
    opt = Adam([np.ones(3)], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: param_groups\[0\] keys must be "
                                         r"among .*got unknown \[.*'foreach'.*\].*torch\.optim"):
        opt.load_state_dict(ref.state_dict())
    assert opt.state == {}


@pytest.mark.parametrize("step, exc", [(-1.0, ValueError), (float("nan"), ValueError),
                                       (float("inf"), ValueError),
                                       pytest.param(10**400, ValueError, id="10**400"),
                                       ("3", TypeError),
                                       (None, TypeError), (True, TypeError), (1 + 2j, TypeError)])
def test_load_state_dict_rejects_bad_steps(step, exc):
    opt = Adam([np.ones(3)], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = step
    fresh = Adam([np.ones(3)], lr=0.1)
    with pytest.raises(exc, match=r"Adam.load_state_dict: state\[0\]\['step'\] must be a finite "
                                  r"number >= 0 \(the number of steps taken\); got"):
        fresh.load_state_dict(sd)
    assert fresh.state == {}


def test_load_state_dict_accepts_a_0d_step(torch):
    opt = Adam([np.ones(3)], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = torch.tensor(1.0)
    fresh = Adam([np.ones(3)], lr=0.1)
    fresh.load_state_dict(sd)
    assert fresh.state[0]["step"] == 1.0 and type(fresh.state[0]["step"]) is float


@pytest.mark.parametrize("key", ["momentum", "foreach", "betas2"])
def test_load_state_dict_rejects_unknown_hyperparameters(key):
    opt = Adam([np.ones(3)], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0][key] = 0.5
    with pytest.raises(ValueError, match=rf"param_groups\[0\] keys must be among .*'{key}'"):
        Adam([np.ones(3)], lr=0.1).load_state_dict(sd)


def test_load_state_dict_rejects_unknown_state_keys():
    opt = Adam([np.ones(3)], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = np.ones(3)
    with pytest.raises(ValueError, match=r"state\[0\] keys must be among"):
        Adam([np.ones(3)], lr=0.1).load_state_dict(sd)


@pytest.mark.parametrize("cls, key, kw", [(SGD, "lr", {}), (Adam, "lr", {}), (Adam, "eps", {}),
                                          (SGD, "momentum", dict(lr=0.1))])
def test_0d_tensor_hyperparameters_are_kept_and_read_as_floats(torch, cls, key, kw):
    w, ref_w = np.ones(3), np.ones(3)
    value = torch.tensor(0.1, dtype=torch.float64)
    opt = cls([w], **{**kw, key: value})
    ref = cls([ref_w], **{**kw, key: 0.1})
    assert opt.param_groups[0][key] is value
    for _ in range(2):
        opt.step([np.ones(3)])
        ref.step([np.ones(3)])
    np.testing.assert_array_equal(w, ref_w)
    opt.param_groups[0][key] = np.float32(0.25)     # set later (a scheduler): also taken
    opt.step([np.ones(3)])
    assert type(opt.param_groups[0][key]) is float


@pytest.mark.parametrize("value", [[0.1], np.array([0.1]), 1 + 0j, "0.1"])
def test_non_scalar_hyperparameters_are_refused(value):
    with pytest.raises(ValueError, match=r"SGD: lr must be a finite number >= 0 \(a Python "
                                         r"number or 0-d array\); got"):
        SGD([np.ones(3)], lr=value)


def test_state_copies_go_through_the_registry(rng):
    from fastinterp import _registry as registry
    w = rng.standard_normal(5)
    opt = Adam([w], lr=0.1)
    opt.step([np.ones(5)])
    builtin = registry.lookup("state_copy", "cpu", np.float64)
    calls = []

    def spy(dst, src):
        calls.append(dst.shape)
        builtin(dst, src)

    registry.register("state_copy", "cpu", "float64", spy, source="test-spy")
    try:
        sd = opt.state_dict()
        Adam([np.ones(5)], lr=0.1).load_state_dict(sd)
    finally:
        registry.unregister("test-spy")
    assert calls == [(5,)] * 4     # two buffers out, two in


@pytest.mark.cudasim
@pytest.mark.parametrize("cls, kw", [c for c in NONFINITE_CONFIGS if "amsgrad" in c[1]
                                     or c[1].get("weight_decay", 1) == 0 or len(c[1]) == 1],
                         ids=lambda v: str(v) if isinstance(v, dict) else v.__name__)
def test_cuda_nonfinite_matches_cpu(cuda, cls, kw):
    p0s, grad_seq = _special_problem(np.float64)
    cpu, _ = _ours_run(cls, kw, p0s, grad_seq)
    p_dev = cuda.to_device(p0s[0].copy())
    dev = cls([p_dev], **kw)
    for (g,) in grad_seq:
        dev.step([cuda.to_device(g)])
    _same_special(p_dev.copy_to_host(), cpu[0])


@pytest.mark.parametrize("call", [
    "optim.sgd_step(p, g[:3], b, 0.1, 0.9, 0.0, 0.0, False, False, False, 2)",
    "optim.sgd_step(p, g, b[:2], 0.1, 0.9, 0.0, 0.0, False, False, False, 2)",
    "optim.adam_step(p, g, b[:5], b, b, 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, False, 0.1, 1.0, False, 2)",
    "optim.adam_step(p, g, b, b, b[:0], 0.1, 0.9, 0.99, 1e-8, 0.0, False, True, False, 0.1, 1.0, False, 2)",
])
def test_step_kernels_guard_their_sizes(call):
    # The kernels are exported (registry, C ABI): a short buffer raises, nothing is written.
    import subprocess
    import sys
    code = ("import numpy as np\nfrom fastinterp._cpu import optim\n"
            "p = np.ones(100_000); g = np.ones(100_000); b = np.ones(100_000)\n"
            f"try:\n    {call}\nexcept ValueError as e:\n    print('VE', e)\n"
            "print('unchanged', bool((p == 1).all() and (b == 1).all()))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "VE " in r.stdout and "must have shape (100000,) like param" in r.stdout
    assert "unchanged True" in r.stdout


@pytest.mark.parametrize("bind", ["1", "0"])
def test_threads_leave_the_callers_affinity_unchanged(bind):
    # Kernels bind their OpenMP team to distinct CPUs only while a region runs
    # (kernels/cpu/_team.h); the caller's thread (main or other) keeps its mask.
    import subprocess
    import sys
    code = (
        "import os, threading, numpy as np, fastinterp as fi\n"
        "from fastinterp.optim import Adam, SGD\n"
        "fi.set_num_threads(2)\n"
        "def run(out):\n"
        "    before = os.sched_getaffinity(0)\n"
        "    p = np.ones(300_000, np.float32); q = p.astype(np.float64)\n"
        "    Adam([p]).step([p * 0.5]); SGD([q], lr=0.1, momentum=0.9).step([q])\n"
        "    out.append(os.sched_getaffinity(0) == before == os.sched_getaffinity(0))\n"
        "out = []\nrun(out)\n"
        "t = threading.Thread(target=run, args=(out,)); t.start(); t.join()\n"
        "print(out)\n")
    env = {**__import__("os").environ, "FASTINTERP_TEAM_CONTROL": bind}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[True, True]"


def test_concurrent_callers_match_serial(threads, rng):
    # 8 Python threads stepping their own optimizers at once (each with a team of 2):
    # results equal the serial ones and every caller keeps its affinity mask.
    import os
    import threading
    threads.set_num_threads(2)
    p0 = rng.standard_normal(200_000).astype(np.float32)
    g = rng.standard_normal(200_000).astype(np.float32)
    serial = p0.copy()
    Adam([serial], lr=0.01).step([g])
    results, masks = [None] * 8, [None] * 8

    def work(k):
        before = os.sched_getaffinity(0)
        p = p0.copy()
        opt = Adam([p], lr=0.01)
        opt.step([g])
        results[k], masks[k] = p, os.sched_getaffinity(0) == before

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(masks)
    for r in results:
        np.testing.assert_array_equal(r, serial)


def test_two_threads_on_one_cpu_still_bit_identical():
    # A team that cannot get its CPUs (here: the process confined to one CPU after
    # start-up) is slower than one thread; the kernels then back off to one thread
    # for a while (kernels/cpu/_team.h). Either way the results are the same bits.
    import subprocess
    import sys
    code = (
        "import os, numpy as np, fastinterp as fi\n"
        "from fastinterp.optim import Adam\n"
        "rng = np.random.default_rng(0)\n"
        "p0 = rng.standard_normal(400_000).astype(np.float32)\n"
        "gs = [rng.standard_normal(400_000).astype(np.float32) for _ in range(6)]\n"
        "def run(n):\n"
        "    fi.set_num_threads(n); p = p0.copy(); opt = Adam([p], lr=0.01)\n"
        "    for g in gs: opt.step([g])\n"
        "    return p\n"
        "ref = run(1)\n"
        "cpus = sorted(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, {cpus[0]})\n"
        "print(all(np.array_equal(run(2), ref) for _ in range(3)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


@pytest.mark.parametrize("make", [lambda p: fi.optim.SGD([p], lr=0.1, momentum=0.9),
                                  lambda p: fi.optim.Adam([p], lr=0.1),
                                  lambda p: fi.optim.AdamW([p], lr=0.1)])
def test_torch_parameters_with_requires_grad_are_updated_like_torch(make):
    """nn.Parameter requires grad: the step updates its storage in place (as torch.optim
    does under no_grad), follows a replaced storage, and equals torch's optimizer."""
    torch = pytest.importorskip("torch")
    ours = torch.nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
    theirs = torch.nn.Parameter(ours.detach().clone())
    opt = make(ours)
    kind = type(opt).__name__
    ref = {"SGD": lambda q: torch.optim.SGD([q], lr=0.1, momentum=0.9),
           "Adam": lambda q: torch.optim.Adam([q], lr=0.1),
           "AdamW": lambda q: torch.optim.AdamW([q], lr=0.1)}[kind](theirs)
    for step in range(3):
        g = torch.linspace(0.5, -2, 7, dtype=torch.float64) * (step + 1)
        opt.step([g])
        theirs.grad = g.clone()
        ref.step()
    assert ours.requires_grad
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-12, atol=1e-12)
    ours.data = torch.zeros(7, dtype=torch.float64)     # replaced storage is followed
    opt.step([torch.ones(7, dtype=torch.float64)])
    assert not torch.equal(ours.detach(), torch.zeros(7, dtype=torch.float64))


@pytest.mark.parametrize("flag", ["nesterov", "maximize"])
def test_sgd_flags_take_ints_as_torch_does(flag):
    p = np.ones(3)
    opts = dict(momentum=0.9) if flag == "nesterov" else {}
    for value, want in ((1, True), (0, False), (np.int64(1), True), (np.bool_(True), True)):
        opt = fi.optim.SGD([p], lr=0.1, **opts, **{flag: value})
        assert opt.param_groups[0][flag] is want
    for bad in ("no", [1], None, 1.0):
        with pytest.raises(TypeError, match=f"{flag} must be a bool"):
            fi.optim.SGD([p], lr=0.1, **opts, **{flag: bad})


# --- parameters that cannot be updated in place, gradients that are not a list -----------

@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.5)), (SGD, dict(lr=0.5, momentum=0.9)),
                                     (Adam, dict(lr=0.5)), (AdamW, dict(lr=0.5))])
@pytest.mark.parametrize("scalar", [np.float32(1.0), np.float64(1.0)])
def test_numpy_scalar_params_are_refused(cls, kw, scalar):
    """A NumPy scalar is immutable: a step would update a copy and leave it unchanged."""
    match = (rf"^{cls.__name__}: params\[0\] must be an array \(it is updated in place\); "
             rf"got a NumPy scalar {type(scalar).__name__}")
    with pytest.raises(TypeError, match=match):
        cls([scalar], **kw)
    opt = cls([np.zeros(2)], **kw)
    with pytest.raises(TypeError, match=match.replace("0", "1")):
        opt.add_param_group({"params": [scalar]})
    assert len(opt.param_groups) == 1


class _ArrayLike:
    """Has a shape and converts to an array, but a conversion is a copy."""
    shape = (3,)

    def __array__(self, dtype=None, copy=None):
        return np.ones(3)


def test_array_likes_that_convert_by_copy_are_refused():
    with pytest.raises(TypeError, match=r"^SGD: params\[0\] must be an array \(it is updated "
                                        r"in place\); got _ArrayLike"):
        SGD([_ArrayLike()], lr=0.1)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_0d_array_params_step(cls):
    w = np.array(1.0)
    cls([w], lr=0.5, weight_decay=0.0).step([np.array(1.0)])
    np.testing.assert_allclose(w, 0.5, rtol=1e-7)


@pytest.mark.parametrize("grads, given", [(None, "NoneType"), (5, "int"), ("abc", "str"),
                                          ({0: np.ones(3)}, "dict"), (2.5, "float")])
def test_step_grads_that_are_not_a_list(grads, given):
    w = np.ones(3)
    opt = SGD([w], lr=0.1)
    with pytest.raises(TypeError, match=rf"^SGD.step: grads must be a list of arrays \(or "
                                        rf"None\), one per parameter; got {given}\.$"):
        opt.step(grads)
    np.testing.assert_array_equal(w, 1.0)
    opt.step(g for g in [np.ones(3)])                  # any iterable other than those
    np.testing.assert_array_equal(w, 0.9)


@pytest.mark.parametrize("make, match", [
    (lambda: SGD([np.ones(3)], lr=10**400), r"lr must be a finite number >= 0 \(a Python "
                                            r"number or 0-d array\); got an int of 401 digits "
                                            r"\(beyond float's range\)\.$"),
    (lambda: SGD([np.ones(3)], lr=-10**400), "lr must be a finite number"),
    (lambda: SGD([np.ones(3)], lr=0.1, momentum=10**400), "momentum must be a finite number"),
    (lambda: Adam([np.ones(3)], eps=10**400), "eps must be a finite number"),
    (lambda: Adam([np.ones(3)], betas=(0.9, 10**400)), r"betas\[1\] must be in \[0, 1\)"),
])
def test_numbers_beyond_float_are_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- per-group options in state_dict round trips ----------------------------------------

@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("amsgrad", [(False, True), (True, False)])
def test_state_dict_round_trip_with_amsgrad_in_some_groups(cls, amsgrad):
    a, b = np.ones(3), np.ones(2)
    opt = cls([{"params": [a], "amsgrad": amsgrad[0]}, {"params": [b], "amsgrad": amsgrad[1]}],
              lr=0.1)
    opt.step([np.ones(3), np.ones(2)])
    snap = opt.state_dict()
    opt.load_state_dict(snap)
    assert [g["amsgrad"] for g in opt.param_groups] == list(amsgrad)
    opt.step([np.ones(3), np.ones(2)])
    # the parameter whose own group has amsgrad must keep its maximum
    k = amsgrad.index(True)
    del snap["state"][k]["max_exp_avg_sq"]
    with pytest.raises(ValueError, match=rf"state {k} must have key 'max_exp_avg_sq' "
                                         rf"\(amsgrad=True in its group\)"):
        opt.load_state_dict(snap)


# --- parameter lists edited after construction (as torch allows) -------------------------

def _torch_sgd_with_append(torch, groups_np, grads_seq, append_at, extra):
    """torch.optim.SGD on copies, ``extra`` appended to group 0 before step ``append_at``."""
    groups = [{**g, "params": [torch.tensor(p) for p in g["params"]]} for g in groups_np]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    for k, grads in enumerate(grads_seq):
        if k == append_at:
            groups[0]["params"].append(torch.tensor(extra))
            opt.param_groups[0]["params"] = groups[0]["params"]
        params = [p for g in opt.param_groups for p in g["params"]]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.numpy() for g in opt.param_groups for p in g["params"]]


def test_param_appended_to_a_group_is_stepped_like_torch(torch, rng):
    a, b, c = rng.standard_normal(3), rng.standard_normal(2), rng.standard_normal(4)
    grads_seq = [[rng.standard_normal(3), rng.standard_normal(2)] for _ in range(2)]
    grads_seq += [[rng.standard_normal(3), rng.standard_normal(4), rng.standard_normal(2)]
                  for _ in range(2)]
    groups = [{"params": [a]}, {"params": [b], "lr": 0.05}]
    want = _torch_sgd_with_append(torch, groups, grads_seq, 2, c)
    ours = [{"params": [a.copy()]}, {"params": [b.copy()], "lr": 0.05}]
    extra = c.copy()
    opt = SGD(ours, lr=0.1, momentum=0.9)
    for k, grads in enumerate(grads_seq):
        if k == 2:
            opt.param_groups[0]["params"].append(extra)
        opt.step(grads)
    got = opt.param_groups[0]["params"] + opt.param_groups[1]["params"]
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sorted(sd["state"]) == [0, 1, 2]
    assert sd["state"][1]["momentum_buffer"].shape == (4,)        # the appended one
    assert sd["state"][2]["momentum_buffer"].shape == (2,)        # b's state followed it


def test_param_removed_from_a_group_drops_its_state():
    a, b = np.ones(3), np.ones(2)
    opt = Adam([a, b], lr=0.1)
    opt.step([np.ones(3), np.ones(2)])
    opt.param_groups[0]["params"].remove(a)
    opt.step([np.ones(2)])
    assert sorted(opt.state) == [0] and opt.state[0]["step"] == 2.0
    np.testing.assert_allclose(b, 0.8)
    np.testing.assert_allclose(a, 0.9)


@pytest.mark.parametrize("bad, exc, match", [
    (lambda a: np.ones(4, np.int64), TypeError, r"params\[1\] must have dtype float32 or float64"),
    (lambda a: a, ValueError, r"params\[1\] appears twice"),
    (lambda a: np.float64(1.0), TypeError, r"params\[1\] must be an array"),
    (lambda a: [1.0], TypeError, r"params\[1\] must be an array"),
])
def test_invalid_param_appended_to_a_group_is_refused(bad, exc, match):
    a = np.ones(3)
    opt = SGD([a], lr=0.1, momentum=0.9)
    opt.step([np.ones(3)])
    opt.param_groups[0]["params"].append(bad(a))
    with pytest.raises(exc, match=rf"^SGD.step: {match}"):
        opt.step([np.ones(3), np.ones(4)])
    np.testing.assert_array_equal(a, 0.9)                  # nothing moved
    opt.param_groups[0]["params"].pop()
    opt.step([np.ones(3)])                                 # and it steps again once undone
    assert opt.state[0]["momentum_buffer"][0] == 1.9


def test_group_params_replaced_by_a_non_list_is_refused():
    opt = SGD([np.ones(3)], lr=0.1)
    opt.param_groups[0]["params"] = None
    with pytest.raises(TypeError, match=r"^SGD.step: param_groups\[0\]\['params'\] must be a "
                                        r"sequence of arrays; got NoneType\.$"):
        opt.step([np.ones(3)])


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_a_tensor_lr_changed_in_place_is_read_at_the_step(torch, cls):
    """torch's schedulers update a tensor lr with fill_: the group keeps the tensor (it
    was converted to a float once, and the change was ignored)."""
    lr = torch.tensor(0.1, dtype=torch.float64)
    w, ref_w = np.ones(3), torch.ones(3, dtype=torch.float64, requires_grad=True)
    ref_lr = torch.tensor(0.1, dtype=torch.float64)
    opt, ref = cls([w], lr=lr), getattr(torch.optim, cls.__name__)([ref_w], lr=ref_lr)
    for new_lr in (0.5, 0.05):
        lr.fill_(new_lr)
        ref_lr.fill_(new_lr)
        opt.step([np.full(3, 0.3)])
        ref_w.grad = torch.full((3,), 0.3, dtype=torch.float64)
        ref.step()
        np.testing.assert_allclose(w, ref_w.detach().numpy(), rtol=1e-15)
    assert opt.param_groups[0]["lr"] is lr
    assert opt.state_dict()["param_groups"][0]["lr"] is lr


def test_a_key_added_to_a_group_is_refused_by_step_as_by_load_state_dict():
    """step() took a group key that load_state_dict(state_dict()) then refused."""
    w = np.ones(3)
    opt = SGD([w], lr=0.1)
    opt.param_groups[0]["note"] = "x"
    with pytest.raises(ValueError, match=r"^SGD.step: param_groups\[0\] keys must be among .*; "
                                         r"got unknown \['note'\]"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(w, 1.0)
    del opt.param_groups[0]["note"]
    opt.step([np.ones(3)])
    SGD([np.ones(3)], lr=0.1).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_tensor_betas_changed_in_place_are_read_at_the_step(torch, cls):
    b1, ref_b1 = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)
    w, ref_w = np.ones(3), torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = cls([w], lr=0.1, betas=(b1, 0.999))
    ref = getattr(torch.optim, cls.__name__)([ref_w], lr=0.1,
                                             betas=(ref_b1, torch.tensor(0.999, dtype=torch.float64)))
    for new_b1 in (0.5, 0.7, 0.2):
        b1.fill_(new_b1)
        ref_b1.fill_(new_b1)
        opt.step([np.array([0.3, -1.0, 2.0])])
        ref_w.grad = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
        ref.step()
        np.testing.assert_allclose(w, ref_w.detach().numpy(), rtol=1e-14)
    b1.fill_(1.5)                       # checked at every step too
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\); got 1.5"):
        opt.step([np.ones(3)])


def test_load_state_dict_copies_tensor_hyperparameters(torch):
    """As torch's: the loading optimizer does not share a 0-d tensor with the source."""
    lr = torch.tensor(0.1, dtype=torch.float64)
    source, target = SGD([np.ones(3)], lr=lr), SGD([np.ones(3)], lr=0.5)
    target.load_state_dict(source.state_dict())
    lr.fill_(0.01)
    assert float(target.param_groups[0]["lr"]) == 0.1
    assert target.param_groups[0]["lr"] is not lr


def test_a_group_missing_a_key_is_a_value_error_at_the_step():
    opt = SGD([np.ones(3)], lr=0.1)
    del opt.param_groups[0]["momentum"]
    with pytest.raises(ValueError, match=r"^SGD.step: param_groups\[0\] must have every key of "
                                         r".*; missing \['momentum'\]"):
        opt.step([np.ones(3)])


def test_betas_given_as_an_iterator_are_read_once():
    opt = Adam([np.zeros(3)], betas=iter([0.9, 0.999]))
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_load_state_dict_takes_a_non_leaf_tensor_hyperparameter(torch):
    lr = torch.tensor(0.2, requires_grad=True) * 0.5       # (no deepcopy for non-leaves)
    opt = SGD([np.zeros(3)], lr=lr)
    opt.load_state_dict(opt.state_dict())
    assert float(opt.param_groups[0]["lr"]) == float(lr)


def test_a_hyperparameter_float_cannot_read_is_read_once(cuda):
    """A 0-d numba device array (no __float__) was kept and failed mid-step, after other
    parameters had been updated."""
    a, b = np.ones(3), np.ones(3)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": cuda.to_device(np.array(0.1))}], lr=0.1)
    opt.step([np.ones(3), np.ones(3)])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [
    lambda p: SGD([p], lr=1e300),
    lambda p: SGD([p], lr=0.1, weight_decay=1e300),
    lambda p: SGD([p], lr=0.1, momentum=0.5, dampening=1e39),
    lambda p: Adam([p], lr=1e300),
    lambda p: Adam([p], lr=0.1, weight_decay=1e300),
    lambda p: AdamW([p], lr=0.1, eps=1e39),
])
def test_a_hyper_parameter_float32_cannot_hold_is_a_value_error(make):
    """The update runs in the parameter's dtype: lr=1e300 turned float32 parameters into
    -inf or NaN (torch: 'value cannot be converted to type float without overflow')."""
    p = np.ones(3, np.float32)
    opt = make(p)
    with pytest.raises(ValueError, match=r"must be representable in float32 \(the dtype of "
                                         r"params\[0\]\)"):
        opt.step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(p, 1)
    make(np.ones(3)).step([np.ones(3)])          # float64 parameters hold it


@pytest.mark.parametrize("cls, kw, steps", [
    (Adam, dict(lr=1e38), 0),                           # lr / (1 - 0.9) at step 1
    (AdamW, dict(lr=4e37, weight_decay=0.0), 0),
    (Adam, dict(lr=1e37, betas=(0.99, 0.999)), 0),
    (Adam, dict(lr=5e37, betas=(0.95, 0.999), amsgrad=True), 2),  # lr raised at step 3
])
def test_a_step_size_float32_cannot_hold_is_refused_as_torch_refuses_it(torch, cls, kw, steps):
    """lr / (1 - beta1**step) beyond float32 turned the parameters into -inf without an
    error; torch refuses it ('value cannot be converted to type float without overflow')."""
    p = np.ones(3, np.float32)
    opt = cls([p], **dict(kw, lr=0.1 if steps else kw["lr"]))
    for _ in range(steps):
        opt.step([np.ones(3, np.float32)])
    opt.param_groups[0]["lr"] = kw["lr"]
    before = p.copy()
    with pytest.raises(ValueError, match=r"must be representable in float32 \(the dtype of "
                                         r"params\[0\]\)"):
        opt.step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(p, before)
    tp = torch.ones(3, requires_grad=True)
    topt = getattr(torch.optim, cls.__name__)([tp], **dict(kw, lr=0.1 if steps else kw["lr"]))
    for _ in range(steps):
        tp.grad = torch.ones(3)
        topt.step()
    topt.param_groups[0]["lr"] = kw["lr"]
    tp.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="overflow"):
        topt.step()


def test_sgd_takes_torchs_positional_order_and_default_lr(torch):
    """SGD(params, lr, momentum, dampening, weight_decay, nesterov) as torch.optim.SGD: the
    positional call SGD([p], 0.1, 0.9, 0, 1) was Nesterov without weight decay here."""
    p = np.array([1.0, -2.0, 0.5])
    tp = torch.tensor(p, requires_grad=True)
    opt, topt = SGD([p], 0.1, 0.9, 0, 1), torch.optim.SGD([tp], 0.1, 0.9, 0, 1)
    for k in range(3):
        g = np.array([0.3, -0.1, 2.0]) * (k + 1)
        opt.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-15)
    assert SGD([np.ones(2)]).param_groups[0]["lr"] == torch.optim.SGD(
        [torch.ones(2, requires_grad=True)]).param_groups[0]["lr"]
    with pytest.raises(TypeError):
        SGD([np.ones(2)], 0.1, 0.9, 0, 0, False, False)      # maximize is keyword only


# --- torch's autograd sees the in-place update ------------------------------------------

@pytest.mark.parametrize("cls, kw", [(SGD, {"lr": 0.1}), (SGD, {"lr": 0.1, "momentum": 0.9}),
                                     (Adam, {"lr": 0.1}), (AdamW, {"lr": 0.1})])
def test_step_tells_autograd_the_parameter_changed(torch, cls, kw):
    """A graph that saved a parameter's old values used the stepped ones (silently wrong
    gradients, [1.8, 3.8, 5.8] instead of [2, 4, 6]) where torch.optim's step raises:
    the step now bumps the tensor's version, as torch's in-place updates do."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    opt = cls([w], **kw)
    y = (w * w).sum()
    opt.step([torch.ones(3)])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    ref = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    torch_opt = getattr(torch.optim, cls.__name__)([ref], **kw)
    ref.grad = torch.ones(3)
    z = (ref * ref).sum()
    torch_opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()
    np.testing.assert_allclose(w.detach().numpy(), ref.detach().numpy(), rtol=1e-6)


def test_step_bumps_the_version_of_torch_state(torch):
    w = torch.tensor([1.0, 2.0, 3.0])
    opt = Adam([w], lr=0.1)
    opt.step([torch.ones(3)])
    m = opt.state[0]["exp_avg"]
    assert isinstance(m, torch.Tensor)
    before = m._version
    opt.step([torch.ones(3)])
    assert m._version > before


# --- state edited by hand is checked before any parameter changes -----------------------

def _stepped_adam():
    ws = [np.ones(3), np.ones(3)]
    opt = Adam(ws, lr=0.1)
    opt.step([np.ones(3)] * 2)
    return ws, opt


@pytest.mark.parametrize("key, value, error, match", [
    ("exp_avg", np.zeros(5), ValueError, r"state\[1\]\['exp_avg'\] must have shape \(3,\)"),
    ("exp_avg", np.zeros(3, np.float32), TypeError, r"state\[1\]\['exp_avg'\] must have dtype"),
    ("exp_avg", np.zeros(6)[::2], ValueError, r"state\[1\]\['exp_avg'\] must be C-contiguous"),
    ("exp_avg", [0.0, 0.0, 0.0], TypeError, r"state\[1\]\['exp_avg'\] must be an array"),
    ("exp_avg", None, ValueError, r"state\[1\] must have keys"),
    ("exp_avg_sq", np.zeros(3).reshape(3, 1), ValueError, r"state\[1\]\['exp_avg_sq'\]"),
    ("step", "x", TypeError, r"state\[1\]\['step'\] must be a finite number"),
    ("step", -1.0, ValueError, r"state\[1\]\['step'\] must be a finite number"),
])
def test_bad_state_is_refused_before_any_update(key, value, error, match):
    """An edited state entry was checked only when its parameter's turn came: the error
    named the parameter (params[1] must keep its shape) after parameter 0 had been
    stepped; a list was copied each step (its moments never moved), a bad step count
    was a bare float() error."""
    ws, opt = _stepped_adam()
    before = [w.copy() for w in ws], {i: dict(s) for i, s in opt.state.items()}
    opt.state[1][key] = value
    with pytest.raises(error, match=match):
        opt.step([np.ones(3)] * 2)
    for w, w0 in zip(ws, before[0]):
        np.testing.assert_array_equal(w, w0)
    assert opt.state[0]["step"] == before[1][0]["step"]


def test_momentum_buffer_none_starts_afresh_as_torch():
    """torch's idiom to reset momentum: state['momentum_buffer'] = None (the next step
    starts from the gradient). It raised AttributeError."""
    w, ref = np.ones(3), np.ones(3)
    opt, fresh = SGD([w], lr=0.1, momentum=0.9), SGD([ref], lr=0.1, momentum=0.9)
    opt.step([np.full(3, 5.0)])
    opt.state[0]["momentum_buffer"] = None
    w[...] = ref
    opt.step([np.full(3, 2.0)])
    fresh.step([np.full(3, 2.0)])
    np.testing.assert_array_equal(w, ref)
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], fresh.state[0]["momentum_buffer"])


def test_replaced_torch_storage_is_released(torch):
    """p.data = new: the optimizer kept the storage the parameter had when it was built
    (its allocation template was a detached view of it): 200 MB held per replaced
    50M-element parameter, saved again by torch.save(opt). torch.optim keeps none."""
    import gc
    import weakref
    p = torch.nn.Parameter(torch.ones(1000))
    opt = SGD([p], lr=0.1, momentum=0.9)
    old = weakref.ref(p.data.untyped_storage())
    opt.step([torch.ones(1000)])                 # state buffers made from the template
    p.data = torch.zeros(1000)
    gc.collect()
    assert old() is None, "the optimizer keeps the replaced storage alive"
    opt.step([torch.ones(1000)])
    assert torch.all(p.detach() < 0)


@pytest.mark.parametrize("cls, key, value", [
    (SGD, "momentum_buffer", None),                     # torch's idiom: restart momentum
    (Adam, "step", np.float64(2.0)), (Adam, "step", np.array(2.0))])
def test_state_dict_round_trips_state_the_caller_may_edit(cls, key, value):
    """state_dict() refused a 0-d step (copied as a buffer of the parameter's shape) and
    load_state_dict() a None buffer, though step() takes both (a None buffer starts
    afresh, as in torch); load_state_dict takes exactly what state_dict returns."""
    kw = dict(lr=0.1, momentum=0.9) if cls is SGD else dict(lr=0.1)
    ws = [np.ones(3), np.ones(3)]
    opt, twin = cls(ws[:1], **kw), cls(ws[1:], **kw)
    opt.step([np.ones(3)])
    ws[1][...] = ws[0]
    opt.state[0][key] = value
    twin.load_state_dict(opt.state_dict())
    for o in (opt, twin):
        o.step([np.full(3, 2.0)])
    np.testing.assert_array_equal(ws[0], ws[1])
    assert opt.state_dict()["state"][0].keys() == twin.state_dict()["state"][0].keys()


@pytest.mark.parametrize("cls, kw", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.1)),
                                     (AdamW, dict(lr=0.1, amsgrad=True))])
def test_joblib_round_trip_keeps_the_state(cls, kw):
    """joblib's pickler does not keep the identity of NumPy arrays: the restored
    optimizer's parameter records and its groups held separate copies, and its first
    step dropped all state as if the parameters had been replaced (Adam restarted at
    step 1). Parameters are pickled once, in the groups, and the records rebuilt."""
    import io
    joblib = pytest.importorskip("joblib")
    w, ref = np.ones(4), np.ones(4)
    opt, straight = cls([w], **kw), cls([ref], **kw)
    for o in (opt, straight):
        o.step([np.linspace(-1, 1, 4)])
    buf = io.BytesIO()
    joblib.dump(opt, buf)
    buf.seek(0)
    restored = joblib.load(buf)
    restored.step([np.full(4, 0.5)])
    straight.step([np.full(4, 0.5)])
    np.testing.assert_array_equal(restored.param_groups[0]["params"][0], ref)
    for key, value in straight.state[0].items():
        np.testing.assert_array_equal(restored.state[0][key], value)


@pytest.mark.cudasim
@pytest.mark.parametrize("saved_on, loaded_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_state_saved_on_one_device_loads_on_the_other(cuda, rng, saved_on, loaded_on):
    """torch.optim's load_state_dict moves the state to its parameter's device and
    dtype (a checkpoint loaded with map_location='cpu' resumes on CUDA); fastinterp's
    refused it ("must be a CUDA array like its parameter"). The snapshot here is also
    float32 for float64 parameters: cast, as on the CPU."""
    def place(arr, where):
        return cuda.to_device(arr) if where == "cuda" else arr

    def host(arr):
        return arr.copy_to_host() if hasattr(arr, "copy_to_host") else np.asarray(arr)

    p0, grads = rng.standard_normal(9), [rng.standard_normal(9) for _ in range(4)]
    src = place(p0.astype(np.float32), saved_on)
    opt = Adam([src], lr=0.1, amsgrad=True)
    for g in grads[:2]:
        opt.step([place(g.astype(np.float32), saved_on)])
    dst = place(host(src).astype(np.float64), loaded_on)
    other = Adam([dst], lr=0.1, amsgrad=True)
    other.load_state_dict(opt.state_dict())
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        moved = other.state[0][key]
        assert hasattr(moved, "copy_to_host") == (loaded_on == "cuda")
        np.testing.assert_array_equal(host(moved), host(opt.state[0][key]).astype(np.float64))
    other.step([place(grads[2], loaded_on)])
    assert np.isfinite(host(dst)).all() and not np.array_equal(host(dst), host(src))


@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
def test_a_required_adam_buffer_set_to_none_is_refused_and_left_alone(key):
    """load_state_dict took a None exp_avg (or max_exp_avg_sq with amsgrad), after which
    every step failed ('amsgrad ... switched on after step 1') and had deleted the key:
    the optimizer was stuck. Adam cannot start one buffer afresh mid-run (torch.optim
    fails there too): both refuse it, naming the key, and change nothing."""
    w = np.ones(3)
    opt = Adam([w], lr=0.1, amsgrad=True)
    opt.step([np.ones(3)])
    snapshot = opt.state_dict()
    snapshot["state"][0][key] = None
    with pytest.raises(ValueError, match=key if key == "max_exp_avg_sq" else r"missing \['" + key):
        opt.load_state_dict(snapshot)
    opt.state[0][key] = None
    with pytest.raises(ValueError, match=key if key == "max_exp_avg_sq" else r"missing \['" + key):
        opt.step([np.ones(3)])
    assert key in opt.state[0]
    opt.state[0][key] = np.zeros(3)
    opt.step([np.ones(3)])
    assert opt.state[0]["step"] == 2


@pytest.mark.parametrize("betas", [{0.999, 0.9}, {0.9: "a", 0.999: "b"}, b"\x00\x00", "ab"])
def test_adam_betas_without_an_order_are_refused(betas):
    """A set (its order says nothing), a dict's keys or bytes were read as two betas: a
    set {0.999, 0.9} gave betas (0.999, 0.9), silently swapped."""
    with pytest.raises(ValueError, match="betas must be two numbers"):
        Adam([np.ones(3)], betas=betas)
