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
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions.transforms import LowerCholeskyTransform

from .base import EncoderModel, diagonal_gaussian
from .networks import GaussianEncoder, make_trunk
from .registry import register

# Added inside square roots: psi comes out of a ReLU and can be exactly zero for an input, and
# d sqrt(v)/dv is infinite at v = 0 (this produced NaN losses in training).
VAR_EPS = 1e-10


def quadratic_forms(chol: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """psi_b^T (L_j L_j^T) psi_b for all b, j: ||L_j^T psi_b||^2. chol (d,p,p), psi (B,p) -> (B,d)."""
    return torch.einsum("bp,jpq->bjq", psi, chol).square().sum(-1)


def gaussian_kl_to_standard(mean: torch.Tensor, chol_raw: torch.Tensor) -> torch.Tensor:
    """sum_j KL(N(mean_j, L_j L_j^T) || N(0, I)) in closed form, where L = LowerCholesky(chol_raw).

    KL = 1/2 (tr(L L^T) + |mean|^2 - p - log det(L L^T)); LowerCholeskyTransform puts exp(raw) on
    the diagonal, so log det(L L^T) = 2 sum(diag(raw)).
    """
    chol = LowerCholeskyTransform()(chol_raw)
    p = mean.shape[-1]
    trace = chol.square().sum((-2, -1))
    logdet = 2 * chol_raw.diagonal(dim1=-2, dim2=-1).sum(-1)
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
        self.base = GaussianEncoder(net, latent_dim)
        self.psi_m = make_trunk(net)  # the encoder minus its last layer: p = h
        self.psi_s = make_trunk(net)
        p, d = net.hidden, latent_dim
        self.log_scale_samples = log_scale_samples
        self.mu = nn.Parameter(torch.zeros(d, p))
        self.eta = nn.Parameter(torch.zeros(d, p))
        diag = torch.full((d, p), math.log(init_std))
        self.sigma_raw = nn.Parameter(torch.diag_embed(diag))
        self.gamma_raw = nn.Parameter(torch.diag_embed(diag.clone()))

    def sigma_chol(self) -> torch.Tensor:
        return LowerCholeskyTransform()(self.sigma_raw)

    def gamma_chol(self) -> torch.Tensor:
        return LowerCholeskyTransform()(self.gamma_raw)

    def moments(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-input quantities of eqs. 12 and 15, each (B, d)."""
        b, c = self.base(x)
        pm, ps = self.psi_m(x), self.psi_s(x)
        scale_mean = c + ps @ self.eta.T
        var_f = quadratic_forms(self.sigma_chol(), pm)
        var_h = quadratic_forms(self.gamma_chol(), ps)
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

    def weight_kl(self) -> torch.Tensor:
        """KL(q(W, U) || N(0, I)), closed form."""
        return gaussian_kl_to_standard(self.mu, self.sigma_raw) + gaussian_kl_to_standard(
            self.eta, self.gamma_raw
        )

    def averaged_kl(self, mom: dict[str, torch.Tensor]) -> torch.Tensor:
        """E_q(W,U)[KL(q(z|x,W,U) || p(z))], eq. 15, per example."""
        shape = (self.log_scale_samples, *mom["scale_mean"].shape)
        eps = torch.randn(shape, device=mom["mean"].device)
        scale = mom["scale_mean"] + (mom["var_h"] + VAR_EPS).sqrt() * eps
        expected_log_scale_sq = torch.log(scale.square() + 1e-20).mean(0)
        return 0.5 * (mom["var"] + mom["mean"].square() - 1 - expected_log_scale_sq).sum(-1)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 14: -E[KL(q(z|x,W,U)||p(z))] + E_q(z|x)[log p(x|z)] - KL(q(W,U)||N(0,I)) / N."""
        mom = self.moments(x)
        z = mom["mean"] + mom["var"].sqrt() * torch.randn_like(mom["mean"])
        return (
            self.log_likelihood(x, z)
            - self.averaged_kl(mom)
            - self.weight_kl() / self.num_train
        )

    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Tr V(f(x)|D) + Tr V(h(x)|D) (section 3.3): psi^T (sum_j Sigma_j) psi, and the same for h."""
        mom = self.moments(x)
        return mom["var_f"].sum(-1) + mom["var_h"].sum(-1)
