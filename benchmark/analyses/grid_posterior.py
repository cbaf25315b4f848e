"""The true posterior p(z|x) of a 2-D latent model on a grid, its moments, and how non-Gaussian it is.

p(z|x) is proportional to p(x|z) p(z); on a regular grid with cell area A the normalised masses are
P_i = softmax_i(log p(x, z_i)), the density there is P_i / A, and log p(x) ~= logsumexp_i
log p(x, z_i) + log A (a Riemann sum). Non-Gaussianity is KL(p || N(m, S)) with (m, S) the grid
posterior's own mean and covariance (its moment-matched Gaussian), estimated on the grid as
sum_i P_i (log(P_i / A) - log N(z_i; m, S)): zero for a Gaussian posterior up to discretisation.

Also, for Figure 1's secondary metrics: KL(N(m, L L^T) || p(z|x)) of any Gaussian (the base
encoder's N(b, c^2), or the moment-matched Gaussian: the reverse KL) by 2-D Gauss-Hermite
quadrature of log p(x, z) under the Gaussian, with log p(x) from the grid; and the number of modes
of the grid posterior on the log scale (local maxima within 12 nats of the peak).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.distributions import MultivariateNormal
from torch.nn import functional as F

PAIRS_PER_CHUNK = 1 << 16  # (image, grid point) pairs per log_prob call: bounds memory to ~0.2 GB


def make_grid(lo, hi, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """n x n cell centres over the box [lo, hi] (two 2-vectors): points (n*n, 2) in row-major
    order of (y, x) so that .reshape(n, n) gives an image with y down the rows; also the axes."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    step = (hi - lo) / n
    xs = lo[0] + step[0] * (torch.arange(n) + 0.5)
    ys = lo[1] + step[1] * (torch.arange(n) + 0.5)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    return points, xs, ys, float(step[0] * step[1])


@torch.no_grad()
def grid_log_joint(model, x: torch.Tensor, points: torch.Tensor, point_chunk: int = 2048):
    """log p(x_b, z_g) = log p(x_b | z_g) + log p(z_g) for every image b and grid point g, (B, G).

    Uses only the plugin protocol's decoder, likelihood and prior; every grid point is decoded once
    and scored against all images."""
    device = x.device
    out = torch.empty(len(x), len(points))
    prior = model.prior()
    for start in range(0, len(points), point_chunk):
        z = points[start : start + point_chunk].to(device)
        decoded = model.decoder(z)  # (g, C, H, W)
        log_prior = prior.log_prob(z)
        per = max(1, PAIRS_PER_CHUNK // len(z))
        for b in range(0, len(x), per):
            xb = x[b : b + per]
            ll = model.likelihood.log_prob(xb.unsqueeze(1), decoded.unsqueeze(0))  # (b, g)
            out[b : b + per, start : start + len(z)] = (ll + log_prior).cpu()
    return out


@torch.no_grad()
def paired_log_joint(model, x: torch.Tensor, points: torch.Tensor, pairs: int = 8192):
    """log p(x_b, z_bg) for each image's own grid points (B, G, 2), (B, G), through the plugin
    protocol's log_joint (which takes z as (S, B, d))."""
    batch, n = points.shape[:2]
    out = torch.empty(batch, n)
    step = max(1, pairs // batch)
    for g in range(0, n, step):
        z = points[:, g : g + step].transpose(0, 1).to(x.device)  # (g, B, 2)
        out[:, g : g + step] = model.log_joint(x, z).T.cpu()
    return out


def normalise(log_joint: torch.Tensor, cell_area) -> tuple[torch.Tensor, torch.Tensor]:
    """(log masses (B, G) summing to one per row, log evidence estimate (B,)). `cell_area` is a
    number or one per image, (B,)."""
    lse = torch.logsumexp(log_joint, dim=-1)
    return log_joint - lse.unsqueeze(-1), lse + torch.log(torch.as_tensor(cell_area))


def _per_image(points: torch.Tensor, cell_area, batch: int):
    """Points as (B, G, 2) and cell areas as (B,) doubles, from shared or per-image ones."""
    pts = points.double()
    pts = pts.expand(batch, *pts.shape[-2:]) if pts.dim() == 3 else pts.unsqueeze(0).expand(
        batch, *pts.shape)
    area = torch.as_tensor(cell_area, dtype=torch.float64).expand(batch)
    return pts, area


def grid_moments(log_mass: torch.Tensor, points: torch.Tensor, cell_area):
    """Mean (B, 2) and covariance (B, 2, 2) of the grid posterior; `points` (G, 2) shared or
    (B, G, 2) per image. Each cell's mass is spread uniformly over its (square) cell, which adds
    step^2 / 12 per axis: this also keeps the covariance positive definite when all mass falls in
    one cell."""
    p = log_mass.double().exp()
    pts, area = _per_image(points, cell_area, len(p))
    mean = torch.einsum("bg,bgi->bi", p, pts)
    centred = pts - mean.unsqueeze(1)
    cov = torch.einsum("bg,bgi,bgj->bij", p, centred, centred)
    cov = cov + torch.eye(2, dtype=cov.dtype) * (area / 12).view(-1, 1, 1)
    return mean, cov


def kl_to_moment_matched(log_mass: torch.Tensor, points: torch.Tensor, cell_area):
    """KL(grid posterior || N(its mean, its covariance)) per image, (B,). >= 0 up to
    discretisation; ~0 for a Gaussian posterior resolved by the grid."""
    mean, cov = grid_moments(log_mass, points, cell_area)
    pts, area = _per_image(points, cell_area, len(log_mass))
    gauss = MultivariateNormal(mean.unsqueeze(1), covariance_matrix=cov.unsqueeze(1))
    log_gauss = gauss.log_prob(pts)  # (B, G)
    lm = log_mass.double()
    p = lm.exp()
    log_density = lm - torch.log(area).unsqueeze(-1)
    terms = torch.where(p > 0, p * (log_density - log_gauss), torch.zeros_like(p))
    return terms.sum(-1).float()


def mass_boxes(log_mass: torch.Tensor, points: torch.Tensor, step: torch.Tensor,
               nats: float = 12.0):
    """Per image, the square box around the cells within `nats` of its peak, padded by one cell
    `step` (a number or (B,)) on each side: where a finer grid should look. (lo, hi), each (B, 2)."""
    pts, _ = _per_image(points, 1.0, len(log_mass))
    keep = (log_mass >= log_mass.max(-1, keepdim=True).values - nats).unsqueeze(-1)
    big = torch.finfo(pts.dtype).max
    lo = torch.where(keep, pts, big).min(1).values
    hi = torch.where(keep, pts, -big).max(1).values
    pad = torch.as_tensor(step, dtype=pts.dtype).reshape(-1, 1)
    lo, hi = lo - pad, hi + pad
    centre, half = (lo + hi) / 2, ((hi - lo).max(-1, keepdim=True).values / 2)
    return (centre - half).float(), (centre + half).float()


def make_grids(lo: torch.Tensor, hi: torch.Tensor, n: int):
    """One n x n grid per box (lo, hi each (B, 2), square boxes): points (B, n*n, 2), areas (B,)."""
    unit = (torch.arange(n) + 0.5) / n
    gy, gx = torch.meshgrid(unit, unit, indexing="ij")
    u = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (G, 2) in [0, 1]^2
    size = hi - lo
    points = lo.unsqueeze(1) + u.unsqueeze(0) * size.unsqueeze(1)
    return points, (size[:, 0] / n) * (size[:, 1] / n)


class GridPosterior(NamedTuple):
    """Each image's grid posterior: log masses (B, G), points (B, G, 2), cell areas (B,), and the
    log evidence log p(x) estimated on the same grid (B,)."""

    log_mass: torch.Tensor
    points: torch.Tensor
    area: torch.Tensor
    log_evidence: torch.Tensor


def refined_posterior(model, x: torch.Tensor, points: torch.Tensor, cell_area: float, n: int,
                      levels: int = 2, batch: int = 16) -> GridPosterior:
    """Start from a shared coarse grid, then `levels` times zoom each image's grid onto the cells
    holding its mass (mass_boxes) and recompute there with n x n points: the final grids."""
    log_mass, log_evidence = normalise(grid_log_joint(model, x, points), cell_area)
    pts, area = points, torch.full((len(x),), cell_area)
    for _ in range(levels):
        lo, hi = mass_boxes(log_mass, pts, area.sqrt())
        pts, area = make_grids(lo, hi, n)
        joint = torch.cat([paired_log_joint(model, x[i : i + batch], pts[i : i + batch])
                           for i in range(0, len(x), batch)])
        log_mass, log_evidence = normalise(joint, area)
    return GridPosterior(log_mass, pts, area, log_evidence)


def gauss_hermite_2d(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes (n*n, 2) and weights (n*n,) (summing to one) with sum_g w_g f(t_g) ~= E[f(t)] for
    t ~ N(0, I_2): the n-point Gauss-Hermite rule on each axis (exact for polynomials of degree
    2n - 1 in each coordinate), in float64."""
    t, w = np.polynomial.hermite.hermgauss(n)
    t = torch.as_tensor(t * math.sqrt(2.0), dtype=torch.float64)
    w = torch.as_tensor(w / math.sqrt(math.pi), dtype=torch.float64)
    ty, tx = torch.meshgrid(t, t, indexing="ij")
    nodes = torch.stack([tx.reshape(-1), ty.reshape(-1)], -1)
    return nodes, (w[:, None] * w[None, :]).reshape(-1)


def kl_gaussian_to_posterior(model, x: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor,
                             log_evidence: torch.Tensor, n: int = 16, batch: int = 16):
    """KL(N(mean, L L^T) || p(z|x)) per image, (B,): E_N[log N(z)] - E_N[log p(x, z)] + log p(x),
    with E_N[log p(x, z)] by n x n Gauss-Hermite quadrature (the model's log_joint at n^2 points
    per image), E_N[log N] = -(1 + log 2 pi) - log |det L| in closed form (d = 2), and log p(x)
    given (the grid's: GridPosterior.log_evidence). mean (B, 2), scale_tril (B, 2, 2)."""
    nodes, weights = gauss_hermite_2d(n)
    tril = scale_tril.double()
    z = mean.double().unsqueeze(1) + torch.einsum("bij,gj->bgi", tril, nodes)  # (B, G, 2)
    joint = torch.cat([paired_log_joint(model, x[i : i + batch], z[i : i + batch].float())
                       for i in range(0, len(x), batch)]).double()
    expected_joint = (joint * weights).sum(-1)
    log_det = tril.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    neg_entropy = -(1.0 + math.log(2 * math.pi)) - log_det
    return (neg_entropy - expected_joint + log_evidence.double()).float()


def count_modes(log_mass: torch.Tensor, n: int, nats: float = 12.0) -> torch.Tensor:
    """Modes of each image's n x n grid posterior on the log scale, (B,) integers >= 1: cells that
    are the largest of their 3 x 3 neighbourhood and within `nats` of the image's peak. Cells on
    the grid's edge count only if they hold the peak (an edge cell above its in-grid neighbours may
    be a slope that goes on rising outside the grid, not a mode). Points in make_grid(s)'s
    row-major (y, x) order."""
    grid = log_mass.reshape(-1, 1, n, n)
    pooled = F.max_pool2d(grid, 3, stride=1, padding=1)  # padded with -inf
    peak = grid.amax(dim=(-2, -1), keepdim=True)
    is_mode = (grid == pooled) & (grid >= peak - nats)
    interior = torch.zeros(n, n, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    is_mode = is_mode & (interior | (grid == peak))
    return is_mode.flatten(1).sum(-1).clamp(min=1)
