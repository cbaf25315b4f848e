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

Training (autograd on): each L_j is held by its entries (`CholeskyFactor`: the log diagonal, and
the strict lower triangle once, in column blocks: the rectangle below each diagonal block stored
as the matrix its matmul multiplies, the diagonal blocks' triangles packed), so a step forms no L,
masks nothing and Adam steps only the d p (p + 1) / 2 entries per factor that are used. The
quadratic forms psi^T Sigma_j psi = ||L_j^T psi||^2 are two matmuls per column block for all j at
once, never multiplying the zeros above the diagonal blocks (`quadratic_forms`); the diagonal
blocks are laid out once a step (`cholesky_factors`) and shared by eq. 12 and the weight KL.
Saved weights hold the raw (d, p, p) matrices (`sigma_raw`, `gamma_raw`, what LowerCholeskyTransform
takes), as before the packed layout.

Test time (autograd off): Sigma_j and Gamma_j do not depend on x, so they are formed once and kept
(`prepare_inference`, or lazily on the first no-grad call) as their upper block triangles
(`PackedQuadraticForms`), which halves the work of the quadratic forms psi^T Sigma_j psi. The
cache is keyed on the storage and version counter of every covariance parameter (every in-place
update, an optimizer step or load_state_dict included, bumps the version) and dropped by
`train()`, so it is never stale.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions.transforms import LowerCholeskyTransform

from .base import EncoderModel, diagonal_gaussian
from .networks import make_trunk
from .registry import register

# Added inside square roots: psi comes out of a ReLU and can be exactly zero for an input, and
# d sqrt(v)/dv is infinite at v = 0 (this produced NaN losses in training).
VAR_EPS = 1e-10
# Columns per block of a CholeskyFactor's strict lower triangle (see there). 64 keeps the matmuls
# wide; 32 saves 10% of their flops but doubles their calls.
BLOCK = 16


class CholeskyFactor(nn.Module):
    """The lower-triangular Cholesky factors L_j (p x p, j < d) of one family of covariances
    (Sigma_j = L_j L_j^T or Gamma_j = M_j M_j^T), torch's LowerCholeskyTransform of a raw matrix
    (strict lower part as it is, diagonal exp(raw's diagonal)), with every entry stored once, in
    column blocks [s, e) of `block` columns:

    - log_diag (d, p): the log of the diagonals;
    - rect.K, for each column block but the last: the rectangle below its diagonal block, rows
      [e, p), as (p - e, d, e - s), L_j[e + r, s + q] at [r, j, q]: viewed as (p - e, d (e - s)),
      exactly the matrix the block's quadratic forms multiply, so a step uses it as it is stored;
    - tri (d, T): the strict lower triangles of the diagonal blocks, packed (block by block, each
      row-major), scattered with exp(log_diag) into the dense diagonal blocks in each step.

    Adam steps the d p (p + 1) / 2 entries that are used; nothing is masked. `raw()` gives the
    (d, p, p) raw matrix of the same factors and `load_raw_` takes one; GPVAE's state_dict holds
    the raw matrices (`sigma_raw`, `gamma_raw`), so saved weights do not depend on this layout.
    """

    def __init__(self, latent_dim: int, p: int, init_log_diag: float, block: int = BLOCK):
        super().__init__()
        d = self.latent_dim = latent_dim
        self.p = p
        self.blocks = tuple((s, min(s + block, p)) for s in range(0, p, block))
        self.log_diag = nn.Parameter(torch.full((d, p), init_log_diag))
        self.rect = nn.ParameterList([nn.Parameter(torch.zeros(p - e, d, e - s))
                                      for s, e in self.blocks if e < p])
        self.tri_sizes = tuple((e - s) * (e - s - 1) // 2 for s, e in self.blocks)
        self.tri = nn.Parameter(torch.zeros(d, sum(self.tri_sizes)))
        # the dense diagonal blocks lie one after the other, block [s, e) as (c, d, c) with
        # L_j[s + r, s + q] at [r, j, q] (c = e - s); where tri's entries and the diagonal go
        j = torch.arange(d)[:, None]
        to_tri, to_diag, offset = [], [], 0
        for s, e in self.blocks:
            c = e - s
            r, q = torch.tril_indices(c, c, -1)
            to_tri.append(offset + r * d * c + j * c + q)  # (d, c (c - 1) / 2)
            to_diag.append(offset + torch.arange(c) * (d * c + 1) + j * c)  # (d, c)
            offset += c * d * c
        self.block_numels = tuple((e - s) ** 2 * d for s, e in self.blocks)
        self.register_buffer("tri_index", torch.cat(to_tri, 1).reshape(-1), persistent=False)
        self.register_buffer("diag_index", torch.cat(to_diag, 1).reshape(-1), persistent=False)

    def rects(self) -> list[torch.Tensor | None]:
        """Per column block, its rectangle parameter (p - e, d, c), None for the last block."""
        return [*self.rect, None]

    def strict_parameters(self) -> tuple[torch.Tensor, ...]:
        return (*self.rect, self.tri)

    def diagonal_blocks(self, diag: torch.Tensor | None = None) -> torch.Tensor:
        """The dense diagonal blocks (flat, block after block), from tri and `diag` (default
        exp(log_diag)); not differentiable (the training step's backward is written out)."""
        diag = self.log_diag.exp() if diag is None else diag
        dense = diag.new_zeros(sum(self.block_numels))
        dense[self.tri_index] = self.tri.detach().reshape(-1)
        dense[self.diag_index] = diag.detach().reshape(-1)
        return dense

    def factors(self) -> LowerCholesky:
        """This step's handle on the factors (see LowerCholesky)."""
        return LowerCholesky(self)

    def dense(self) -> torch.Tensor:
        """L (d, p, p), differentiable (tests, the test-time cache)."""
        return LowerCholeskyTransform()(self.raw())

    def _tri_parts(self):
        """(rows, cols, tri's columns) per block: where tri's entries sit in L."""
        start = 0
        for (s, e), size in zip(self.blocks, self.tri_sizes, strict=True):
            r, q = torch.tril_indices(e - s, e - s, -1, device=self.tri.device)
            yield s + r, s + q, slice(start, start + size)
            start += size

    def raw(self) -> torch.Tensor:
        """The raw (d, p, p) matrix whose LowerCholeskyTransform is L: the strict lower triangle,
        log_diag on the diagonal, zeros above. Built entry by entry from the parameters (not by
        the training step's layout), so it can check that layout; differentiable."""
        d, p = self.latent_dim, self.p
        out = self.log_diag.new_zeros(d, p, p)
        out.diagonal(dim1=-2, dim2=-1).copy_(self.log_diag)
        for (s, e), rect in zip(self.blocks, self.rects(), strict=True):
            if rect is not None:
                out[:, e:, s:e] = rect.transpose(0, 1)
        for rows, cols, part in self._tri_parts():
            out[:, rows, cols] = self.tri[:, part]
        return out

    @torch.no_grad()
    def load_raw_(self, raw: torch.Tensor) -> None:
        """Set the factors to LowerCholeskyTransform(raw)'s (raw's upper triangle is ignored)."""
        self.log_diag.copy_(raw.diagonal(dim1=-2, dim2=-1))
        for (s, e), rect in zip(self.blocks, self.rects(), strict=True):
            if rect is not None:
                rect.copy_(raw[:, e:, s:e].transpose(0, 1))
        for rows, cols, part in self._tri_parts():
            self.tri[:, part] = raw[:, rows, cols]


class LowerCholesky:
    """One training step's handle on a CholeskyFactor, shared by eq. 12's moments and the weight
    KL (`GPVAE.cholesky_factors`, formed once a step): `quadratic_forms` computes the forms and,
    in the same pass, the sum of squares of the strict lower triangles that the KL's trace needs
    (kept here as `strict_sq`), so that their gradients are one pass over the parameters."""

    def __init__(self, factor: CholeskyFactor):
        self.factor = factor
        self.strict_sq: torch.Tensor | None = None

    @property
    def latent_dim(self) -> int:
        return self.factor.latent_dim

    @property
    def log_diag(self) -> torch.Tensor:
        return self.factor.log_diag

    def strict_square_sum(self) -> torch.Tensor:
        """sum_j ||strict_j||_F^2: from this step's forms if computed, else computed here."""
        if self.strict_sq is not None:
            return self.strict_sq
        return sum(part.square().sum() for part in self.factor.strict_parameters())


class _FactorQuadraticForms(torch.autograd.Function):
    """(psi_b^T L_j L_j^T psi_b for all b, j; sum of squares of the strict lower triangles) from
    a CholeskyFactor's parameters, forward and backward written out (see quadratic_forms)."""

    @staticmethod
    def forward(ctx, factor, psi, log_diag, tri, *rects):
        batch, d = psi.shape[0], factor.latent_dim
        diag = log_diag.exp()
        dense = factor.diagonal_blocks(diag)
        blocks = dense.split(factor.block_numels)
        forms = psi.new_zeros(batch, d)
        projs = []
        for (s, e), block, rect in zip(factor.blocks, blocks, (*rects, None), strict=True):
            proj = psi[:, s:e] @ block.view(e - s, -1)  # (B, d c): (L_j^T psi)'s columns s..e
            if rect is not None:
                proj.addmm_(psi[:, e:], rect.view(rect.shape[0], -1))  # rows e.. (p > e)
            forms += proj.view(batch, d, e - s).square().sum(-1)
            projs.append(proj)
        flat = [t.reshape(-1) for t in (*rects, tri)]
        strict_sq = sum(torch.dot(t, t) for t in flat)
        ctx.factor = factor
        ctx.save_for_backward(psi, diag, tri, dense, *rects, *projs)
        return forms, strict_sq

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_forms, grad_sq):
        factor = ctx.factor
        psi, diag, tri, dense, *rest = ctx.saved_tensors
        n_rects = len(factor.blocks) - 1
        rects, projs = rest[:n_rects], rest[n_rects:]
        batch, d = psi.shape[0], factor.latent_dim
        # psi's gradient accumulates transposed, (p, B), so that each block adds to rows
        grad_psi_t = psi.new_zeros(psi.shape[1], batch) if ctx.needs_input_grad[1] else None
        grad_dense = dense.new_empty(dense.shape)
        grad_blocks = grad_dense.split(factor.block_numels)
        blocks = dense.split(factor.block_numels)
        two_g = 2 * grad_forms.unsqueeze(-1) if grad_forms is not None else None
        # d (sum of squares) / d strict = 2 strict: added as the gradients are formed (a number
        # on a CPU, where reading it costs nothing; a tensor elsewhere)
        kl = None if grad_sq is None else 2 * grad_sq
        kl_number = float(kl) if kl is not None and kl.device.type == "cpu" else None
        grad_rects = []
        for i, (s, e) in enumerate(factor.blocks):
            c, rect = e - s, rects[i] if i < n_rects else None
            flat_rect = None if rect is None else rect.view(rect.shape[0], -1)
            if two_g is None:
                grad_blocks[i].zero_()
                if rect is not None:
                    grad_rects.append(None if kl is None else rect * kl)
                continue
            g = (projs[i].view(batch, d, c) * two_g).view(batch, d * c)  # d forms / d proj
            torch.mm(psi[:, s:e].T, g, out=grad_blocks[i].view(c, d * c))
            if grad_psi_t is not None:
                grad_psi_t[s:e].addmm_(blocks[i].view(c, d * c), g.T)
            if rect is None:
                continue
            rows = psi[:, e:]
            if kl_number is not None:
                grad = torch.addmm(flat_rect, rows.T, g, beta=kl_number)
            else:
                grad = rows.T @ g
                if kl is not None:
                    grad.add_(flat_rect * kl)
            grad_rects.append(grad.view(rect.shape))
            if grad_psi_t is not None:
                grad_psi_t[e:].addmm_(flat_rect, g.T)
        grad_psi = None if grad_psi_t is None else grad_psi_t.T
        grad_tri = grad_dense[factor.tri_index].view(tri.shape)
        if kl_number is not None:
            grad_tri.add_(tri, alpha=kl_number)
        elif kl is not None:
            grad_tri.add_(tri * kl)
        grad_log_diag = grad_dense[factor.diag_index].view(diag.shape) * diag
        return None, grad_psi, grad_log_diag, grad_tri, *grad_rects


def quadratic_forms(chol: LowerCholesky, psi: torch.Tensor) -> torch.Tensor:
    """psi_b^T (L_j L_j^T) psi_b = ||L_j^T psi_b||^2 for all b, j: psi (B, p) -> (B, d).

    (L_j^T psi)'s columns in block [s, e) take rows s.. of L only: psi[:, s:e] @ diagonal block +
    psi[:, e:] @ rectangle, two matmuls for all j at once (the rectangle as stored). The zeros
    above the diagonal blocks are never multiplied: B d p^2 (k + 1) / 2k multiply-adds for k
    blocks. Forward and backward are written out (`_FactorQuadraticForms`): each parameter's
    gradient is formed once, the KL's d ||strict||^2 / d strict (`chol.strict_sq`) added in the
    same pass, and nothing of the size of the factors is allocated but the gradients and the
    diagonal blocks. Computed in float32 or float64 (the parameters' dtype), autocast or not."""
    factor = chol.factor
    with torch.autocast(psi.device.type, enabled=False):
        forms, strict_sq = _FactorQuadraticForms.apply(
            factor, psi.to(factor.log_diag.dtype), factor.log_diag, factor.tri, *factor.rect)
    if chol.strict_sq is None:
        chol.strict_sq = strict_sq
    return forms


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

    KL_j = 1/2 (tr(L_j L_j^T) + |mean_j|^2 - p - log det(L_j L_j^T)), with tr(L_j L_j^T) =
    ||strict_j||_F^2 + sum exp(2 log_diag_j) and log det = 2 sum(log_diag_j); summed over j, the
    strict parts enter as the sum of squares of every stored entry.
    """
    d, p = mean.shape
    trace = chol.strict_square_sum() + (2 * chol.log_diag).exp().sum()
    logdet = 2 * chol.log_diag.sum()
    return 0.5 * (trace + mean.square().sum() - d * p - logdet)


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
        # L_j and M_j start diagonal, init_std on the diagonal
        self.sigma = CholeskyFactor(d, p, math.log(init_std))
        self.gamma = CholeskyFactor(d, p, math.log(init_std))
        self._inference_cache: tuple | None = None  # (key, sigma forms, gamma forms)
        # saved weights hold the raw (d, p, p) matrices, whatever CholeskyFactor's layout
        self.register_state_dict_post_hook(_save_raw_factors)
        self.register_load_state_dict_pre_hook(_load_raw_factors)

    def sigma_chol(self) -> torch.Tensor:
        return self.sigma.dense()

    def gamma_chol(self) -> torch.Tensor:
        return self.gamma.dense()

    def _cache_key(self) -> tuple:
        return tuple((t.data_ptr(), t._version, t.dtype, t.device)
                     for t in (*self.sigma.parameters(), *self.gamma.parameters()))

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
        return self.sigma.factors(), self.gamma.factors()

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
        sigma_raw, gamma_raw = self.sigma.raw(), self.gamma.raw()
        means, variances = [], []
        for j in range(self.latent_dim):
            sigma_chol, gamma_chol = to_chol(sigma_raw[j]), to_chol(gamma_raw[j])
            sigma = sigma_chol @ sigma_chol.T
            eta = self.eta[j]
            scale_cov = torch.outer(eta, eta) + gamma_chol @ gamma_chol.T
            means.append(b[:, j] + pm @ self.mu[j])
            variances.append(c[:, j] ** 2 + 2 * (ps @ eta) * c[:, j] + ((pm @ sigma) * pm).sum(-1)
                             + ((ps @ scale_cov) * ps).sum(-1))
        return torch.stack(means, -1), torch.stack(variances, -1) + VAR_EPS

    def inference_floor(self) -> InferenceFloor:
        return InferenceFloor(self)

    def training_floor(self) -> TrainingFloor:
        """A model whose training step is GPVAE's compute floor (benchmark.analyses.training_cost)."""
        return TrainingFloor(self)


FACTORS = ("sigma", "gamma")


def _save_raw_factors(module, state_dict, prefix, local_metadata) -> None:
    """state_dict hook: each CholeskyFactor's parameters as one raw (d, p, p) matrix
    (`sigma_raw`, `gamma_raw`: the parameters GPVAE had before the packed layout)."""
    for name in FACTORS:
        inner = f"{prefix}{name}."
        for key in [k for k in state_dict if k.startswith(inner)]:
            del state_dict[key]
        state_dict[f"{prefix}{name}_raw"] = getattr(module, name).raw().detach()


def _load_raw_factors(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: a raw (d, p, p) matrix into its CholeskyFactor's parameters."""
    for name in FACTORS:
        raw = state_dict.pop(f"{prefix}{name}_raw", None)
        if raw is None:
            continue
        factor = getattr(module, name)
        expected = (factor.latent_dim, factor.p, factor.p)
        if tuple(raw.shape) != expected:
            raise RuntimeError(f"{prefix}{name}_raw: shape {tuple(raw.shape)}, expected {expected}")
        staged = CholeskyFactor(factor.latent_dim, factor.p, 0.0).to(raw.dtype)
        staged.load_raw_(raw.detach().cpu())
        for key, value in staged.state_dict().items():
            state_dict[f"{prefix}{name}.{key}"] = value


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


class TrainingFloor(nn.Module):
    """What no GPVAE training step can do without, as a model whose `loss(x)` a benchmark steps
    like any method's: the forward and backward passes of GPVAE's three networks (base encoder,
    psi_m, psi_s) and its decoder, and the quadratic forms' matmuls at their fewest multiply-adds,
    one (B, p) x (p, d h) product per form with h = p // 2 + 1 (about the p (p + 1) / 2 entries
    of a symmetric Sigma_j), whose (p, d h) weights are as many entries as Adam must step per
    covariance. The rest of eqs. 12-15 (elementwise work on (B, d) tensors, the closed-form KL
    over the factors) is left out. Built from copies of the model's parts, so stepping it leaves
    the model as it is."""

    def __init__(self, model: GPVAE):
        super().__init__()
        import copy

        p, d = model.psi_m.out_features, model.latent_dim
        self.latent_dim, self.half = d, p // 2 + 1
        for name in ("base", "psi_m", "psi_s", "decoder", "likelihood"):
            setattr(self, name, copy.deepcopy(getattr(model, name)))
        self.mu = nn.Parameter(model.mu.detach().clone())
        ref = model.mu
        self.forms = nn.ParameterList(
            [nn.Parameter(1e-3 * torch.randn(p, d * self.half, device=ref.device, dtype=ref.dtype))
             for _ in FACTORS])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        b, c = self.base(x)
        pm, ps = self.psi_m(x), self.psi_s(x)
        batch = x.shape[0]
        var = c.square()
        for psi, weight in zip((pm, ps), self.forms, strict=True):
            var = var + (psi @ weight).view(batch, self.latent_dim, -1).square().sum(-1)
        mean = b + pm @ self.mu.T
        z = mean + var.sqrt() * torch.randn_like(mean)
        kl = 0.5 * (var + mean.square() - 1 - var.log()).sum(-1)
        return -(self.likelihood.log_prob(x, self.decoder(z)) - kl).mean()
