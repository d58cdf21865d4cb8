"""Chamfer distance between batches of point clouds, with its gradient, in fastinterp.

    python examples/chamfer.py [--batch B] [--p P] [--r R] [--seed S]

For clouds x (B, P, 3) and y (B, R, 3), per batch element:

    chamfer(x, y) = mean_i min_j |x_i - y_j|^2 + mean_j min_i |x_i - y_j|^2

The nearest neighbours come from one batched ``fi.knn`` call each way (exact:
ties broken by the smaller index, distances recomputed by direct
differences). The gradient goes through ``fi.pairwise_sqdist_backward``: the
loss is ``sum(G * pairwise_sqdist(x, y))`` for a matrix G holding 1/P at each
(i, nn(i)) and 1/R at each (nn(j), j), so the backward of the squared
distances gives d chamfer / dx and d chamfer / dy. Everything is checked
against the same computation with ``torch.cdist`` and torch autograd, and
the PyTorch3D ``knn_points`` / ``knn_gather`` equivalents are shown.
"""
from __future__ import annotations

import time

import numpy as np

import fastinterp as fi


def chamfer(x, y):
    """Chamfer distance per batch element, and the nearest-neighbour indices both ways.

    x (B, P, D), y (B, R, D) (leading dimensions broadcast, as in torch.cdist).
    Returns (loss (B,), nn_xy (B, P): for each x_i its nearest y, nn_yx (B, R)).
    """
    d_xy, nn_xy = fi.knn(y, x, 1)            # for each point of x, the nearest of y
    d_yx, nn_yx = fi.knn(x, y, 1)            # for each point of y, the nearest of x
    loss = d_xy[..., 0].mean(-1) + d_yx[..., 0].mean(-1)
    return loss, nn_xy[..., 0], nn_yx[..., 0]


def chamfer_backward(grad_loss, x, y, nn_xy, nn_yx):
    """Gradients of ``sum(grad_loss * chamfer(x, y))`` with respect to x and y.

    G[b, i, j] collects the weight of the pair (x_i, y_j) in the loss; the
    backward of pairwise_sqdist turns it into gradients (G is dense here:
    (B, P, R) floats, fine for clouds of a few thousand points)."""
    lead = grad_loss.shape
    p, r = x.shape[-2], y.shape[-2]
    g = np.zeros(lead + (p, r), x.dtype)
    w = np.asarray(grad_loss, x.dtype)[..., None]
    np.put_along_axis(g, nn_xy[..., :, None], w[..., None] / p, axis=-1)
    gt = np.swapaxes(g, -1, -2)               # a view: add the other direction's weights
    cur = np.take_along_axis(gt, nn_yx[..., :, None], axis=-1)
    np.put_along_axis(gt, nn_yx[..., :, None], cur + w[..., None] / r, axis=-1)
    return fi.pairwise_sqdist_backward(g, x, y)


def knn_points(p1, p2, K):
    """PyTorch3D's ``knn_points(p1, p2, K=K)`` (no lengths): for each point of p1 its K
    nearest points of p2, as (squared distances (N, P1, K), indices (N, P1, K))."""
    return fi.knn(p2, p1, K)


def knn_gather(p2, idx):
    """PyTorch3D's ``knn_gather(p2, idx)``: the points themselves, (N, P1, K, D)."""
    n, p1, k = idx.shape
    flat = np.take_along_axis(p2, idx.reshape(n, p1 * k, 1), axis=1)
    return flat.reshape(n, p1, k, p2.shape[-1])


def _torch_chamfer(x, y):
    """The reference: torch.cdist (direct differences) and autograd."""
    import torch
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = torch.from_numpy(y).requires_grad_(True)
    d = torch.cdist(tx, ty, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    loss = d.min(-1).values.mean(-1) + d.min(-2).values.mean(-1)
    loss.sum().backward()
    return loss.detach().numpy(), tx.grad.numpy(), ty.grad.numpy(), d.detach()


def _best_ms(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def main(batch=8, p=1000, r=800, seed=0):
    rng = np.random.default_rng(seed)
    # Two noisy samplings of the same shapes (unit spheres, one per batch element).
    x = rng.standard_normal((batch, p, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = rng.standard_normal((batch, r, 3))
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    y += 0.01 * rng.standard_normal(y.shape)

    loss, nn_xy, nn_yx = chamfer(x, y)
    gx, gy = chamfer_backward(np.ones(batch), x, y, nn_xy, nn_yx)
    print(f"chamfer distance of {batch} cloud pairs ({p} and {r} points):",
          np.array2string(loss, precision=5))

    # PyTorch3D-style usage: knn_points / knn_gather equivalents on the batch.
    k = min(4, r)
    dists, idx = knn_points(x, y, K=k)
    nearest = knn_gather(y, idx)
    assert np.allclose(((x[:, :, None, :] - nearest) ** 2).sum(-1), dists)
    print(f"knn_points(x, y, K={k}): dists {dists.shape}, idx {idx.shape}; "
          f"knn_gather -> {nearest.shape}")

    try:
        import torch
    except ImportError:
        print("torch is not installed: the comparison with torch.cdist is skipped")
        return
    ref_loss, ref_gx, ref_gy, d = _torch_chamfer(x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(gy, ref_gy, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(nn_xy, d.argmin(-1).numpy())
    print("loss and gradients equal torch.cdist + autograd (float64)")

    # torch tensors go in and come out through DLPack (no autograd attached here).
    tx, ty = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    td, ti = fi.knn(ty, tx, 1)
    assert isinstance(td, torch.Tensor) and torch.equal(ti[..., 0], d.argmin(-1))

    xf, yf = x.astype(np.float32), y.astype(np.float32)

    def ours():
        lo, a, b = chamfer(xf, yf)
        chamfer_backward(np.ones(batch, np.float32), xf, yf, a, b)

    def theirs():
        txg, tyg = tx.clone().requires_grad_(True), ty.clone().requires_grad_(True)
        dd = torch.cdist(txg, tyg) ** 2
        (dd.min(-1).values.mean(-1) + dd.min(-2).values.mean(-1)).sum().backward()

    print(f"forward + backward, float32: fastinterp {_best_ms(ours):.1f} ms, "
          f"torch.cdist + autograd {_best_ms(theirs):.1f} ms "
          f"({fi.get_num_threads()} fastinterp threads, {torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Chamfer distance of batched point clouds "
                                     "with fastinterp, checked against torch.cdist.")
    from fastinterp.demo import at_least_one
    parser.add_argument("--batch", type=at_least_one, default=8,
                        help="clouds per batch (default 8)")
    parser.add_argument("--p", type=at_least_one, default=1000,
                        help="points in each x (default 1000)")
    parser.add_argument("--r", type=at_least_one, default=800,
                        help="points in each y (default 800)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.batch, args.p, args.r, args.seed)
