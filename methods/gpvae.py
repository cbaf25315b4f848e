"""GPVAE: the Gaussian-process inference network of Kim (CVPR 2022), paper eqs. 8-15.

The encoder's mean and std functions are random: f_j(x) = w_j^T psi_m(x), h_j(x) = u_j^T psi_s(x)
(linear deep kernels), added to a base encoder b(x), c(x) (eq. 8):

    q(z | x, W, U) = N(b(x) + W psi_m(x), Diag(c(x) + U psi_s(x))^2)

with a variational posterior q(W, U) = prod_j N(w_j; mu_j, Sigma_j) N(u_j; eta_j, Gamma_j) (eq. 10),
Sigma_j = L_j L_j^T and Gamma_j = M_j M_j^T (lower-triangular, positive diagonals). Marginalising
W, U by second-order moment matching gives the encoder used for IWAE and reconstruction (eq. 12):

    m_j = b_j + mu_j^T psi_m
    v_j = (c_j + eta_j^T psi_s)^2 + psi_s^T Gamma_j psi_s + psi_m^T Sigma_j psi_m

which is eq. 12 with c^2 + 2 eta^T psi_s c + psi_s^T eta eta^T psi_s collected into a square.
The training objective is eq. 14 with the averaged KL of eq. 15; its E[log (c_j + u_j^T psi_s)^2]
is a Monte Carlo average over the scalar Gaussian c_j + u_j^T psi_s ~ N(c_j + eta_j^T psi_s,
psi_s^T Gamma_j psi_s), reparameterised. Every latent dimension is computed in one batched
contraction: there is no loop over j.

Test time (autograd off): Sigma_j and Gamma_j do not depend on x, so they are formed once and kept
(`prepare_inference`, or lazily on the first no-grad call) as their upper block triangles
(`PackedQuadraticForms`), which halves the work of the quadratic forms psi^T Sigma_j psi. The
cache is keyed on the storage and version counter of sigma_raw and gamma_raw (every in-place update,
an optimizer step or load_state_dict included, bumps the version) and dropped by `train()`, so it
is never stale. With autograd on (training), moments are computed from the Cholesky factors as
above, differentiably.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions.transforms import LowerCholeskyTransform

from .base import EncoderModel, diagonal_gaussian
from .networks import make_trunk
from .registry import register

# Added inside square roots: psi comes out of a ReLU and can be exactly zero for an input, and
# d sqrt(v)/dv is infinite at v = 0 (this produced NaN losses in training).
VAR_EPS = 1e-10


class LowerCholesky(NamedTuple):
    """L = strict + Diag(exp(log_diag)), torch's LowerCholeskyTransform of a raw (d, p, p) matrix,
    kept in its two parts so that a training step never forms L or a diagonal matrix: with p = 500
    (Table 4's FC networks) the elementwise passes over the 2 d p^2 entries (forming L, its
    diagonal matrix, squaring it for the KL's trace, and their backward), not the matmuls, took
    most of a step."""

    strict: torch.Tensor  # (d, p, p), strictly lower triangular
    log_diag: torch.Tensor  # (d, p)

    @classmethod
    def of(cls, raw: torch.Tensor) -> LowerCholesky:
        return cls(raw.tril(-1), raw.diagonal(dim1=-2, dim2=-1))

    def dense(self) -> torch.Tensor:
        return self.strict + torch.diag_embed(self.log_diag.exp())


def quadratic_forms(chol: LowerCholesky, psi: torch.Tensor) -> torch.Tensor:
    """psi_b^T (L_j L_j^T) psi_b for all b, j: ||L_j^T psi_b||^2. psi (B, p) -> (B, d)."""
    proj = torch.einsum("bp,jpq->bjq", psi, chol.strict) + psi[:, None, :] * chol.log_diag.exp()
    return proj.square().sum(-1)


class PackedQuadraticForms:
    """psi_b^T A_j psi_b for all b, j, with the x-independent symmetric A (d, p, p) packed once.

    By symmetry psi^T A psi = sum over the block upper triangle: a diagonal block (I, I) counts once,
    an off-diagonal block (I, J > I) twice. Block row I is stored as one (c, d * (p - s_I)) matrix,
    so it costs one matmul plus one batched dot; in all B d p^2 (k + 1) / 2k multiply-adds for k
    blocks (5/8 of the dense count for k = 4) instead of B d p^2. Blocks of 64 keep the matmuls
    wide; smaller blocks save flops but lose more to per-block overhead on a CPU.
    """

    def __init__(self, cov: torch.Tensor, block: int = 64):
        d, p, _ = cov.shape
        self.latent_dim = d
        self.rows = []  # (start, end, packed row)
        for start in range(0, p, block):
            end = min(start + block, p)
            row = cov[:, start:end, start:].clone()
            row[:, :, end - start:] *= 2
            self.rows.append((start, end, row.permute(1, 0, 2).reshape(end - start, -1).contiguous()))

    def __call__(self, psi: torch.Tensor) -> torch.Tensor:
        batch = psi.shape[0]
        out = psi.new_zeros(batch, self.latent_dim)
        for start, end, row in self.rows:
            partial = (psi[:, start:end] @ row).view(batch, self.latent_dim, -1)  # (B, d, p - s)
            out += torch.bmm(partial, psi[:, start:, None]).squeeze(-1)
        return out


def gaussian_kl_to_standard(mean: torch.Tensor, chol: LowerCholesky) -> torch.Tensor:
    """sum_j KL(N(mean_j, L_j L_j^T) || N(0, I)) in closed form.

    KL = 1/2 (tr(L L^T) + |mean|^2 - p - log det(L L^T)), with tr(L L^T) = ||strict||_F^2 +
    sum exp(2 log_diag) and log det(L L^T) = 2 sum(log_diag).
    """
    p = mean.shape[-1]
    trace = (torch.linalg.vector_norm(chol.strict, dim=(-2, -1)).square()
             + (2 * chol.log_diag).exp().sum(-1))
    logdet = 2 * chol.log_diag.sum(-1)
    return 0.5 * (trace + mean.square().sum(-1) - p - logdet).sum()


@register("gpvae", label="GPVAE")
class GPVAE(EncoderModel):
    def __init__(
        self,
        net,
        latent_dim,
        likelihood,
        num_train,
        init_std: float = 1e-2,
        log_scale_samples: int = 4,
    ):
        super().__init__(net, latent_dim, likelihood, num_train)
        self.base = self.base_encoder()
        self.psi_m = make_trunk(net)  # the encoder minus its last layer: p = h
        self.psi_s = make_trunk(net)
        p, d = net.hidden, latent_dim
        self.log_scale_samples = log_scale_samples
        self.mu = nn.Parameter(torch.zeros(d, p))
        self.eta = nn.Parameter(torch.zeros(d, p))
        diag = torch.full((d, p), math.log(init_std))
        self.sigma_raw = nn.Parameter(torch.diag_embed(diag))
        self.gamma_raw = nn.Parameter(torch.diag_embed(diag.clone()))
        self._inference_cache: tuple | None = None  # (key, sigma forms, gamma forms)

    def sigma_chol(self) -> torch.Tensor:
        return LowerCholesky.of(self.sigma_raw).dense()

    def gamma_chol(self) -> torch.Tensor:
        return LowerCholesky.of(self.gamma_raw).dense()

    def _cache_key(self) -> tuple:
        return tuple((t.data_ptr(), t._version, t.dtype, t.device)
                     for t in (self.sigma_raw, self.gamma_raw))

    def prepare_inference(self) -> None:
        self._packed_covariances()

    @torch.no_grad()
    def _packed_covariances(self) -> tuple[PackedQuadraticForms, PackedQuadraticForms]:
        """Sigma_j and Gamma_j packed; rebuilt when their parameters have changed."""
        key = self._cache_key()
        if self._inference_cache is None or self._inference_cache[0] != key:
            forms = []
            for chol in (self.sigma_chol(), self.gamma_chol()):
                forms.append(PackedQuadraticForms(chol @ chol.transpose(-1, -2)))
            self._inference_cache = (key, *forms)
        return self._inference_cache[1:]

    def train(self, mode: bool = True):
        self._inference_cache = None
        return super().train(mode)

    def cholesky_factors(self) -> tuple[LowerCholesky, LowerCholesky]:
        return LowerCholesky.of(self.sigma_raw), LowerCholesky.of(self.gamma_raw)

    def moments(self, x: torch.Tensor, chols: tuple | None = None) -> dict[str, torch.Tensor]:
        """Per-input quantities of eqs. 12 and 15, each (B, d). `chols`: cholesky_factors()."""
        b, c = self.base(x)
        pm, ps = self.psi_m(x), self.psi_s(x)
        scale_mean = c + ps @ self.eta.T
        if torch.is_grad_enabled():
            sigma_chol, gamma_chol = chols or self.cholesky_factors()
            var_f = quadratic_forms(sigma_chol, pm)
            var_h = quadratic_forms(gamma_chol, ps)
        else:
            sigma_forms, gamma_forms = self._packed_covariances()
            var_f, var_h = sigma_forms(pm), gamma_forms(ps)
        return {
            "mean": b + pm @ self.mu.T,
            "var": scale_mean.square() + var_h + var_f + VAR_EPS,
            "scale_mean": scale_mean,
            "var_f": var_f,
            "var_h": var_h,
        }

    def posterior(self, x: torch.Tensor):
        mom = self.moments(x)
        return diagonal_gaussian(mom["mean"], mom["var"].sqrt())

    def weight_kl(self, chols: tuple | None = None) -> torch.Tensor:
        """KL(q(W, U) || N(0, I)), closed form. `chols`: cholesky_factors()."""
        sigma_chol, gamma_chol = chols or self.cholesky_factors()
        return (gaussian_kl_to_standard(self.mu, sigma_chol)
                + gaussian_kl_to_standard(self.eta, gamma_chol))

    def averaged_kl(self, mom: dict[str, torch.Tensor]) -> torch.Tensor:
        """E_q(W,U)[KL(q(z|x,W,U) || p(z))], eq. 15, per example."""
        shape = (self.log_scale_samples, *mom["scale_mean"].shape)
        eps = torch.randn(shape, device=mom["mean"].device)
        scale = mom["scale_mean"] + (mom["var_h"] + VAR_EPS).sqrt() * eps
        expected_log_scale_sq = torch.log(scale.square() + 1e-20).mean(0)
        return 0.5 * (mom["var"] + mom["mean"].square() - 1 - expected_log_scale_sq).sum(-1)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 14: -E[KL(q(z|x,W,U)||p(z))] + E_q(z|x)[log p(x|z)] - KL(q(W,U)||N(0,I)) / N."""
        chols = self.cholesky_factors() if torch.is_grad_enabled() else None  # formed once a step
        mom = self.moments(x, chols)
        z = mom["mean"] + mom["var"].sqrt() * torch.randn_like(mom["mean"])
        return (
            self.log_likelihood(x, z)
            - self.averaged_kl(mom)
            - self.weight_kl(chols) / self.num_train
        )

    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Tr V(f(x)|D) + Tr V(h(x)|D) (section 3.3): psi^T (sum_j Sigma_j) psi, and the same for h."""
        mom = self.moments(x)
        return mom["var_f"].sum(-1) + mom["var_h"].sum(-1)

    def gaussian_views(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """q(z|x) of eq. 12 and the base encoder N(b, c^2) it corrects."""
        b, c = self.base(x)
        mom = self.moments(x)
        return {"q": (mom["mean"], mom["var"]), "base": (b, c.square())}

    def reference_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var) of q(z|x) by eq. 12 transcribed term by term, one latent dimension j at a
        time, forming Sigma_j = L_j L_j^T and eta_j eta_j^T + Gamma_j from the parameters on each
        call, as a training-time implementation does (the paper's way, footnote 9)."""
        b, c = self.base(x)
        pm, ps = self.psi_m(x), self.psi_s(x)
        to_chol = LowerCholeskyTransform()
        means, variances = [], []
        for j in range(self.latent_dim):
            sigma_chol, gamma_chol = to_chol(self.sigma_raw[j]), to_chol(self.gamma_raw[j])
            sigma = sigma_chol @ sigma_chol.T
            eta = self.eta[j]
            scale_cov = torch.outer(eta, eta) + gamma_chol @ gamma_chol.T
            means.append(b[:, j] + pm @ self.mu[j])
            variances.append(c[:, j] ** 2 + 2 * (ps @ eta) * c[:, j] + ((pm @ sigma) * pm).sum(-1)
                             + ((ps @ scale_cov) * ps).sum(-1))
        return torch.stack(means, -1), torch.stack(variances, -1) + VAR_EPS

    def inference_floor(self) -> InferenceFloor:
        return InferenceFloor(self)


class InferenceFloor:
    """GPVAE's three networks' forward passes (base encoder, psi_m, psi_s) plus one (B, p) x
    (p, d (p + 1)) matmul, whose B d p (p + 1) multiply-adds are those of the two quadratic forms
    psi^T Sigma_j psi and psi^T Gamma_j psi with symmetry used (p (p + 1) / 2 products each per
    example and dimension): nothing of `infer` can be cheaper than this."""

    def __init__(self, model: GPVAE):
        p, d = model.psi_m.out_features, model.latent_dim
        ref = model.mu
        self.model = model
        self.weight = torch.randn(p, d * (p + 1), device=ref.device, dtype=ref.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.base(x)
        self.model.psi_s(x)
        return self.model.psi_m(x) @ self.weight
