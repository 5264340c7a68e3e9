"""LCA solver against an independent dense NumPy solver of the same objective."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sca_jax import lca


def dense_dictionary(D_KKCF: np.ndarray, hw: tuple[int, int],
                     stride: int) -> np.ndarray:
  """The decoder as an explicit matrix, built atom placement by placement.

  Column (i, j, f) holds atom f placed with its centre offset by the "same"
  padding at output position (i, j), clipped at the image border. Written
  without any convolution routine so it checks `lca.decode` independently.
  """
  k, _, c, f = D_KKCF.shape
  h, w = hw
  lo_h, _ = lca.same_padding(h, k, stride)
  lo_w, _ = lca.same_padding(w, k, stride)
  oh, ow = -(-h // stride), -(-w // stride)
  cols = []
  for i in range(oh):
    for j in range(ow):
      for ff in range(f):
        img = np.zeros((h, w, c))
        for di in range(k):
          for dj in range(k):
            y, x = i * stride - lo_h + di, j * stride - lo_w + dj
            if 0 <= y < h and 0 <= x < w:
              img[y, x, :] = D_KKCF[di, dj, :, ff]
        cols.append(img.ravel())
  return np.stack(cols, axis=1)  # (h*w*c, oh*ow*f), code order (i, j, f)


def fista_nonneg(A: np.ndarray, x: np.ndarray, lam: float,
                 iters: int = 20000) -> np.ndarray:
  """Projected FISTA for min 0.5||x - A a||^2 + lam sum(a), a >= 0."""
  L = np.linalg.norm(A, 2) ** 2
  a = z = np.zeros(A.shape[1])
  t = 1.0
  for _ in range(iters):
    a_new = np.maximum(z - (A.T @ (A @ z - x) + lam) / L, 0.0)
    t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
    z = a_new + (t - 1) / t_new * (a_new - a)
    a, t = a_new, t_new
  return a


def dense_objective(A, x, a, lam):
  return 0.5 * np.sum((x - A @ a) ** 2) + lam * np.sum(np.abs(a))


def _problem(seed, hw=(8, 8), c=2, f=3, k=3):
  rng = np.random.default_rng(seed)
  D = np.asarray(lca.init_dictionary(jax.random.key(seed), k, c, f))
  x = rng.normal(size=(1, *hw, c)).astype(np.float32)
  return D, x


# (stride, channels, features, kernel): the generic convolution paths, and
# the stride-1 fast paths (single-channel decode by matmul + shifted adds,
# single-channel few-feature encode by im2col), odd and even kernels.
@pytest.mark.parametrize("stride,c,f,k", [(1, 2, 3, 3), (2, 2, 3, 3),
                                          (1, 1, 3, 3), (1, 1, 24, 5),
                                          (1, 1, 5, 4), (3, 1, 3, 4)])
def test_decode_is_the_dense_matrix_and_encode_its_adjoint(stride, c, f, k):
  D, x = _problem(0, hw=(7, 9), c=c, f=f, k=k)
  A = dense_dictionary(D, (7, 9), stride)
  oh, ow = -(-7 // stride), -(-9 // stride)
  a = np.random.default_rng(1).normal(size=(1, oh, ow, f)).astype(np.float32)
  recon = lca.decode(jnp.asarray(a), jnp.asarray(D), stride, (7, 9))
  np.testing.assert_allclose(np.asarray(recon).ravel(), A @ a.ravel(),
                             atol=1e-5)
  enc = lca.encode(jnp.asarray(x), jnp.asarray(D), stride)
  np.testing.assert_allclose(np.asarray(enc).ravel(), A.T @ x.ravel(),
                             atol=1e-5)


# Odd sizes at strides 2 and 3: the encoder skips rows at the far edge.
@pytest.mark.parametrize("stride,c,f,k", [(1, 2, 3, 3), (2, 2, 3, 3),
                                          (3, 1, 2, 4)])
def test_dictionary_gradients_of_encode_and_decode_match_the_dense_matrix(
    stride, c, f, k):
  D, x = _problem(0, hw=(7, 9), c=c, f=f, k=k)
  oh, ow = -(-7 // stride), -(-9 // stride)
  rng = np.random.default_rng(2)
  g = rng.normal(size=(1, oh, ow, f)).astype(np.float32)
  # <encode(x, D), g> = x^T A(D) g with A linear in D: its derivative in
  # entry e is x^T A(e) g, A(e) the dense decoder of the unit dictionary e.
  want = np.zeros(D.size)
  for e in range(D.size):
    unit = np.zeros(D.size, np.float32)
    unit[e] = 1.0
    A_e = dense_dictionary(unit.reshape(D.shape), (7, 9), stride)
    want[e] = x.ravel() @ A_e @ g.ravel()
  grad_enc = jax.grad(lambda D: jnp.vdot(lca.encode(jnp.asarray(x), D, stride),
                                         g))(jnp.asarray(D))
  grad_dec = jax.grad(lambda D: jnp.vdot(
      lca.decode(jnp.asarray(g), D, stride, (7, 9)), x))(jnp.asarray(D))
  np.testing.assert_allclose(np.asarray(grad_enc).ravel(), want, atol=1e-4)
  np.testing.assert_allclose(np.asarray(grad_dec).ravel(), want, atol=1e-4)


def test_lateral_term_equals_dense_gram_minus_identity():
  D, _ = _problem(2)
  A = dense_dictionary(D, (8, 8), 1)
  a = np.abs(np.random.default_rng(3).normal(size=(1, 8, 8, 3)))
  a = a.astype(np.float32)
  lateral = (lca.encode(lca.decode(jnp.asarray(a), jnp.asarray(D), 1, (8, 8)),
                        jnp.asarray(D), 1) - a)
  G = A.T @ A - np.eye(A.shape[1])
  np.testing.assert_allclose(np.asarray(lateral).ravel(), G @ a.ravel(),
                             atol=1e-5)


@pytest.mark.parametrize("stride,lam", [(1, 0.1), (1, 0.5), (2, 0.2)])
def test_lca_reaches_the_optimum_of_an_independent_solver(stride, lam):
  D, x = _problem(4)
  A = dense_dictionary(D, (8, 8), stride)
  a_star = fista_nonneg(A, x.ravel().astype(np.float64), lam)
  e_star = dense_objective(A, x.ravel(), a_star, lam)
  cfg = lca.LCAConfig(lam=lam, tau=10.0, num_iters=1500, stride=stride,
                      normalize_input=False)
  res = lca.solve(jnp.asarray(x), jnp.asarray(D), cfg, return_trace=True)
  e_lca = dense_objective(A, x.ravel(), np.asarray(res.codes_BHWF).ravel(), lam)
  assert e_lca <= e_star * 1.01, (e_lca, e_star)
  # The trace's objective is the same quantity, computed by the library.
  np.testing.assert_allclose(res.trace["objective"][-1, 0],
                             dense_objective(A, x.ravel(), np.asarray(
                                 lca.threshold(res.potentials_BHWF, lam)
                             ).ravel(), lam), rtol=1e-3)
  # A short solve is measurably worse, so the check above can fail.
  short = lca.solve(jnp.asarray(x), jnp.asarray(D),
                    lca.LCAConfig(lam=lam, tau=10.0, num_iters=3, stride=stride,
                                  normalize_input=False))
  e_short = dense_objective(A, x.ravel(), np.asarray(short.codes_BHWF).ravel(),
                            lam)
  assert e_short > e_star * 1.05


def test_codes_nonnegative_exact_zeros_and_sparsity_rises_with_lambda():
  D, x = _problem(5, hw=(12, 12), c=1, f=8, k=5)
  fractions = []
  for lam in (0.05, 0.2, 0.8):
    cfg = lca.LCAConfig(lam=lam, tau=20.0, num_iters=200)
    res = lca.solve(jnp.asarray(x[..., :1]), jnp.asarray(D), cfg)
    a, u = np.asarray(res.codes_BHWF), np.asarray(res.potentials_BHWF)
    assert (a >= 0).all()
    assert (a[u <= lam] == 0).all()  # exact zeros below threshold
    np.testing.assert_allclose(a[u > lam], u[u > lam] - lam, rtol=1e-6)
    fractions.append((a > 0).mean())
  assert fractions[0] > fractions[1] > fractions[2]


def test_signed_and_hard_thresholds():
  u = jnp.array([-2.0, -0.3, 0.0, 0.3, 2.0])
  np.testing.assert_allclose(lca.threshold(u, 0.5, "soft"),
                             [-1.5, 0, 0, 0, 1.5])
  np.testing.assert_allclose(lca.threshold(u, 0.5, "hard"), [-2, 0, 0, 0, 2])
  with pytest.raises(ValueError, match="threshold"):
    lca.threshold(u, 0.5, "bogus")


def test_bad_settings_fail_clearly():
  with pytest.raises(ValueError, match="lam"):
    lca.LCAConfig(lam=-0.1)
  with pytest.raises(ValueError, match="tau"):
    lca.LCAConfig(tau=0.5)
  D, x = _problem(0)
  with pytest.raises(ValueError, match="channels"):
    lca.solve(jnp.ones((1, 8, 8, 5)), jnp.asarray(D), lca.LCAConfig())


def _check_directional_derivatives(loss, args, grads, seed, count, eps,
                                   **tolerance):
  """Central differences of `loss` along random unit directions of each
  argument match the gradient's directional derivative."""
  rng = np.random.default_rng(seed)
  for i, g in enumerate(grads):
    for _ in range(count):
      direction = rng.normal(size=g.shape)
      direction /= np.linalg.norm(direction)
      plus, minus = list(args), list(args)
      plus[i] = plus[i] + eps * direction
      minus[i] = minus[i] - eps * direction
      fd = (loss(*plus) - loss(*minus)) / (2 * eps)
      np.testing.assert_allclose(float(jnp.sum(g * direction)), float(fd),
                                 **tolerance)


@pytest.mark.parametrize("remat", [False, True])
def test_gradient_through_unrolled_solve_matches_finite_differences(remat):
  with jax.enable_x64(True):
    D, x = _problem(6, hw=(6, 6), c=1, f=3, k=3)
    D = jnp.asarray(D, jnp.float64)
    x = jnp.asarray(x[..., :1], jnp.float64)
    cfg = lca.LCAConfig(lam=0.1, tau=5.0, num_iters=30, remat=remat)
    w = jax.random.normal(jax.random.key(1), (1, 6, 6, 3), jnp.float64)

    def loss(x, D):
      return jnp.sum(w * lca.solve(x, D, cfg).codes_BHWF)

    gx, gD = jax.grad(loss, argnums=(0, 1))(x, D)
    _check_directional_derivatives(loss, (x, D), (gx, gD), seed=0, count=3,
                                   eps=1e-6, rtol=1e-5, atol=1e-8)


def test_hebbian_update_lowers_reconstruction_error_and_keeps_unit_norm():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(4, 10, 10, 1)), jnp.float32)
  D = lca.init_dictionary(jax.random.key(0), 3, 1, 6)
  cfg = lca.LCAConfig(lam=0.1, tau=10.0, num_iters=100, normalize_input=False)
  a = lca.solve(x, D, cfg).codes_BHWF
  err = lambda D: float(jnp.sum(lca.objective(x, a, D, 0.0)))
  D_new = lca.hebbian_update(D, x, a, eta=0.01)
  assert not np.allclose(D_new, D)
  assert err(D_new) < err(D)
  np.testing.assert_allclose(jnp.sum(D_new**2, axis=(0, 1, 2)), 1.0,
                             rtol=1e-5)


@pytest.mark.parametrize("stride,lam", [(1, 0.1), (2, 0.3)])
def test_fista_solver_reaches_the_same_optimum_in_fewer_iterations(stride, lam):
  D, x = _problem(8)
  A = dense_dictionary(D, (8, 8), stride)
  e_star = dense_objective(A, x.ravel(), fista_nonneg(A, x.ravel(), lam), lam)
  L_true = np.linalg.norm(A, 2) ** 2
  L_est = float(lca.lipschitz(jnp.asarray(D), (8, 8), stride))
  assert L_true <= L_est <= 1.06 * L_true  # safe, but not wastefully small
  run = lambda solver, n: dense_objective(A, x.ravel(), np.asarray(lca.solve(
      jnp.asarray(x), jnp.asarray(D), lca.LCAConfig(
          lam=lam, tau=10.0, num_iters=n, stride=stride, solver=solver,
          normalize_input=False)).codes_BHWF).ravel(), lam)
  assert run("fista", 300) <= e_star * 1.001
  # At a tenth of the iterations FISTA beats plain LCA.
  assert run("fista", 60) < run("lca", 60)


def _converged_gradients(grad_mode, remat_levels=2, cg_tol=1e-6):
  """Input and dictionary gradients of a weighted sum of converged codes."""
  D, x = _problem(12, hw=(7, 7), c=1, f=4, k=3)
  D, x = jnp.asarray(D, jnp.float64), jnp.asarray(x, jnp.float64)
  w = jax.random.normal(jax.random.key(2), (1, 7, 7, 4), jnp.float64)
  # A step 1/tau near the stable limit 2/L (L ~ 5.7 here) and a well-posed
  # active set (no potential within 7e-3 of lam): linear convergence to
  # machine precision in 800 steps, so the unrolled gradient is the fixed
  # point's gradient too.
  cfg = lca.LCAConfig(lam=0.4, tau=3.3, num_iters=800,
                      normalize_input=False, grad=grad_mode,
                      remat_levels=remat_levels, cg_iters=500, cg_tol=cg_tol)
  loss = jax.jit(lambda x, D: jnp.sum(w * lca.solve(x, D, cfg).codes_BHWF))
  return loss, x, D, jax.jit(jax.grad(loss, argnums=(0, 1)))(x, D)


def _rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_chunked_remat_and_implicit_gradients_match_unrolled():
  with jax.enable_x64(True):
    _, _, _, (gx, gD) = _converged_gradients("unrolled")
    # Three nested levels (chunks of 10 and 100 steps) cover two as well.
    _, _, _, (gx_c, gD_c) = _converged_gradients("remat_chunked", 3)
    _, _, _, (gx_i, gD_i) = _converged_gradients("implicit", cg_tol=1e-12)
    # Chunked checkpointing recomputes the same operations: same gradient.
    assert _rel(gx_c, gx) < 1e-10 and _rel(gD_c, gD) < 1e-10
    # Converged to machine precision, the unrolled gradient is the fixed
    # point's: equal up to the linear solve's tolerance.
    assert _rel(gx_i, gx) < 1e-9 and _rel(gD_i, gD) < 1e-9


def test_implicit_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    loss, x, D, (gx, gD) = _converged_gradients("implicit")
    rng = np.random.default_rng(3)
    for arg, g in ((0, gx), (1, gD)):
      for _ in range(2):
        direction = rng.normal(size=g.shape)
        direction /= np.linalg.norm(direction)
        eps = 1e-6
        args_p, args_m = [x, D], [x, D]
        args_p[arg] = args_p[arg] + eps * direction
        args_m[arg] = args_m[arg] - eps * direction
        fd = (loss(*args_p) - loss(*args_m)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.sum(g * direction)), float(fd),
                                   rtol=1e-5, atol=1e-8)


def test_implicit_gradient_is_exact_on_an_overcomplete_converged_solve():
  """FISTA (with restart) to machine precision on an overcomplete problem
  like the benchmark's (6 atoms of 5x5 on 9x9 images: 486 codes for 81
  values; 70 and 63 active): the implicit gradient with respect to the input
  and the dictionary equals central finite differences of the converged
  solution, and the unrolled gradient through the same solve. Through a
  shorter solve (300 steps, KKT residual ~1e-5) the unrolled gradient is
  ~2% off: a gap between the two signals an unconverged solve, not a wrong
  implicit gradient."""
  with jax.enable_x64(True):
    D, _ = _problem(13, hw=(9, 9), c=1, f=6, k=5)
    x = np.random.default_rng(13).normal(size=(2, 9, 9, 1))
    D, x = jnp.asarray(D, jnp.float64), jnp.asarray(x, jnp.float64)
    cfg = lca.LCAConfig(lam=0.3, num_iters=1500, solver="fista",
                        fista_restart=True, normalize_input=False,
                        cg_iters=500, cg_tol=1e-12)
    a = lca.solve(x, D, cfg).codes_BHWF
    assert float(jnp.max(lca.kkt_residual(x, a, D, cfg.lam))) < 1e-12
    active = jnp.sum(a > 0, axis=(1, 2, 3))
    assert (active > 20).all() and (active < 81).all(), active
    # No code near a kink (zero, or the threshold for inactive ones), so the
    # 1e-5 steps below keep the active set: the solution is smooth there.
    c = lca.encode(x - lca.decode(a, D, 1, (9, 9)), D, 1)
    assert float(jnp.min(jnp.where(a > 0, a, cfg.lam - c))) > 1e-4
    w = jax.random.normal(jax.random.key(4), a.shape, jnp.float64)

    def loss_fn(grad, num_iters=cfg.num_iters):
      c = dataclasses.replace(cfg, grad=grad, num_iters=num_iters)
      return jax.jit(lambda x, D: jnp.sum(w * lca.solve(x, D, c).codes_BHWF))

    def grad(mode, num_iters=cfg.num_iters):
      return jax.jit(jax.grad(loss_fn(mode, num_iters), argnums=(0, 1)))(x, D)

    gx, gD = grad("implicit")
    diffs = []
    for n in (300, cfg.num_iters):  # KKT residual ~1e-5, ~1e-15
      gx_u, gD_u = grad("unrolled", n)
      diffs.append(max(_rel(gx, gx_u), _rel(gD, gD_u)))
    assert diffs[0] > 1e-3 and diffs[1] < 1e-9, diffs
    loss = loss_fn("implicit")
    _check_directional_derivatives(loss, (x, D), (gx, gD), seed=5, count=2,
                                   eps=1e-5, rtol=1e-7)


def test_kkt_residual_vanishes_only_at_the_minimiser():
  D, x = _problem(4)
  A = dense_dictionary(D, (8, 8), 1)
  lam = 0.1
  a_star = fista_nonneg(A, x.ravel().astype(np.float64), lam)
  a_star = jnp.asarray(a_star.reshape(1, 8, 8, 3), jnp.float32)
  r = lambda a: float(lca.kkt_residual(jnp.asarray(x), a, jnp.asarray(D),
                                       lam)[0])
  assert r(a_star) < 1e-5
  assert r(1.1 * a_star) > 1e-2 and r(jnp.zeros_like(a_star)) > 1e-2
  with pytest.raises(ValueError, match="soft"):
    lca.kkt_residual(jnp.asarray(x), a_star, jnp.asarray(D), lam, "hard")


def test_chunked_schedule_keeps_the_forward_and_trace():
  D, x = _problem(10, hw=(6, 6), c=1, f=3, k=3)
  for solver, levels in (("lca", 2), ("fista", 3)):
    cfg = lca.LCAConfig(lam=0.1, tau=5.0, num_iters=11, solver=solver,
                        normalize_input=False)
    ref = lca.solve(jnp.asarray(x), jnp.asarray(D), cfg, return_trace=True)
    chunked = lca.solve(jnp.asarray(x), jnp.asarray(D), dataclasses.replace(
        cfg, grad="remat_chunked", remat_levels=levels), return_trace=True)
    np.testing.assert_allclose(chunked.codes_BHWF, ref.codes_BHWF, atol=1e-6)
    assert chunked.trace["objective"].shape == (11, 1)
    np.testing.assert_allclose(chunked.trace["objective"],
                               ref.trace["objective"], rtol=1e-5)
  with pytest.raises(ValueError, match="grad"):
    lca.LCAConfig(grad="bogus")


def test_fista_needs_5x_fewer_iterations_than_lca_tau_100():
  D, x = _problem(11, hw=(8, 8), c=1, f=4, k=3)
  A = dense_dictionary(D, (8, 8), 1)
  lam = 0.2
  e_star = dense_objective(A, x.ravel(), fista_nonneg(A, x.ravel(), lam), lam)

  def iters_to_1pct(solver, n, restart=False):
    cfg = lca.LCAConfig(lam=lam, tau=100.0, num_iters=n, solver=solver,
                        fista_restart=restart, normalize_input=False)
    obj = np.asarray(lca.solve(jnp.asarray(x), jnp.asarray(D), cfg,
                               return_trace=True).trace["objective"][:, 0])
    hits = np.nonzero(obj <= 1.01 * e_star)[0]
    assert hits.size, f"{solver} never got within 1% in {n} iterations"
    assert obj[-1] <= 1.01 * e_star
    return int(hits[0]) + 1, obj[-1]

  (n_fista, _), (n_lca, _) = iters_to_1pct("fista", 200), iters_to_1pct(
      "lca", 2000)
  assert 5 * n_fista <= n_lca, (n_fista, n_lca)
  n_restart, e_restart = iters_to_1pct("fista", 200, restart=True)
  assert 5 * n_restart <= n_lca, (n_restart, n_lca)
  assert e_restart <= 1.001 * e_star  # and converges, to the same optimum
