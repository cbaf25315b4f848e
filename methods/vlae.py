"""VLAE: the variational Laplace autoencoder (Park, Kim & Kim, ICML 2019; yookoon/VLAE).

The encoder (the VAE encoder's architecture with a mean head only) gives a starting point mu_0(x).
T updates move it towards the posterior mode using the decoder's local linearisation
g(z) ~= g(mu_t) + J_t (z - mu_t), J_t = dg/dz at mu_t (B x D x d, by forward-mode autodiff):

    Lambda_t = I + J_t^T W_t J_t                              (Gauss-Newton / GGN precision)
    mu_new   = mu_t + Lambda_t^{-1} grad_z log p(x, z)|mu_t    (a Newton step with that precision)
    mu_{t+1} = (1 - r_t) mu_t + r_t mu_new,   r_t = update_lr / (t + 1)

with W = I / sigma_x^2 and grad = J^T (x - g) / sigma_x^2 - mu for the Gaussian likelihood
N(x; g(z), sigma_x^2 I), and W = diag(p (1 - p)), grad = J^T (x - p) - mu, p = sigmoid(g), for the
Bernoulli one (g = logits). For the Gaussian case mu_new is exactly the mode of the linearised
model's posterior, Lambda_t^{-1} J_t^T (x - g(mu_t) + J_t mu_t) / sigma_x^2, as in the reference's
solve_mu. The damping schedule r_t = update_lr / (t + 1) is the reference's (models.py,
update_rate), and so is the default update_lr = 0.5 (run.py's --update_lr default; the paper gives
none): the first update goes half way to the linearised mode. update_lr = 1 makes the first update
a full Newton step. Then q(z|x) = N(mu_T, Lambda(mu_T)^{-1}): full covariance, with the
precision re-linearised at the final mode (T + 1 Jacobians in all, as in the reference). For a
linear decoder with a Gaussian likelihood one update with update_lr = 1 gives the exact posterior
(tested).

Training ELBO: one reparameterised z ~ q, E_q[log p(x|z)] by that sample and KL(q || N(0, I)) in
closed form: 1/2 (tr Sigma + |mu|^2 - d - log det Sigma), Sigma = Lambda^{-1} via its Cholesky
factor. Gradients flow through everything (the updates, the Jacobians and the precision, to both
encoder and decoder), as in the reference, which does not detach the updates either. The Jacobian
is computed with torch.func (vmap over the d basis tangents of a jvp through the batched decoder),
which composes with the outer reverse-mode autograd and also works under torch.no_grad().
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal
from torch.func import jvp, vmap

from .base import EncoderModel
from .likelihoods import BernoulliLikelihood, GaussianLikelihood
from .networks import Encoder
from .registry import register


@register("vlae", label="VLAE", variants=[{"t": 2}, {"t": 4}])
class VLAE(EncoderModel):
    def __init__(self, net, latent_dim, likelihood, num_train, t: int = 2,
                 update_lr: float = 0.5):
        super().__init__(net, latent_dim, likelihood, num_train)
        if not isinstance(likelihood, GaussianLikelihood | BernoulliLikelihood):
            raise TypeError(f"VLAE supports Gaussian and Bernoulli likelihoods, got {likelihood!r}")
        if t < 0:
            raise ValueError(f"the number of updates t must be >= 0, got {t}")
        if not 0 < update_lr <= 1:
            raise ValueError(f"update_lr must be in (0, 1], got {update_lr}")
        self.num_updates = int(t)
        self.update_lr = float(update_lr)
        with self.role_init("base_encoder"):  # its trunk starts as every method's base encoder's
            self.encoder = Encoder(net, latent_dim)

    def decoder_jacobian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output g(z) flattened, (B, D), and its Jacobian per example, (B, D, d)."""
        batch, d = z.shape
        basis = torch.eye(d, dtype=z.dtype, device=z.device).unsqueeze(1).expand(d, batch, d)

        def flat_decoder(zz: torch.Tensor) -> torch.Tensor:
            return self.decoder(zz).reshape(batch, -1)

        out, jac = vmap(lambda v: jvp(flat_decoder, (z,), (v,)), out_dims=(None, 0))(basis)
        return out, jac.permute(1, 2, 0)

    def linearise(self, x: torch.Tensor, mu: torch.Tensor):
        """Laplace/GGN precision (B, d, d) and grad_z log p(x, z) (B, d) at z = mu."""
        out, jac = self.decoder_jacobian(mu)
        x_flat = x.reshape(x.shape[0], -1)
        if isinstance(self.likelihood, GaussianLikelihood):
            inv_var = self.likelihood.inverse_variance()
            residual = (x_flat - out) * inv_var
            jtwj = inv_var * jac.transpose(1, 2) @ jac
        else:  # Bernoulli, out = logits
            p = torch.sigmoid(out)
            residual = x_flat - p
            jtwj = jac.transpose(1, 2) @ (jac * (p * (1 - p)).unsqueeze(-1))
        # J^T (W J) rounds (i, j) and (j, i) differently; in float32 with large Jacobians the
        # difference fails MultivariateNormal's symmetry check, so symmetrise exactly
        jtwj = 0.5 * (jtwj + jtwj.mT)
        eye = torch.eye(mu.shape[-1], dtype=mu.dtype, device=mu.device)
        precision = jtwj + eye
        grad = (jac.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1) - mu
        return precision, grad

    def laplace(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_T, Lambda(mu_T)): the mode after T updates and the precision there."""
        mu = self.encoder(x)
        for step in range(self.num_updates):
            precision, grad = self.linearise(x, mu)
            newton = torch.linalg.solve(precision, grad.unsqueeze(-1)).squeeze(-1)
            rate = self.update_lr / (step + 1)
            mu = mu + rate * newton  # = (1 - r) mu + r (mu + Lambda^{-1} grad)
        precision, _ = self.linearise(x, mu)
        return mu, precision

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        mu, precision = self.laplace(x)
        return MultivariateNormal(mu, precision_matrix=precision)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        q = self.posterior(x)
        scale_tril = q.scale_tril
        d = q.loc.shape[-1]
        trace = scale_tril.square().sum((-2, -1))
        log_det = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        kl = 0.5 * (trace + q.loc.square().sum(-1) - d - log_det)
        return self.log_likelihood(x, q.rsample()) - kl
