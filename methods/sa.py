"""SA: the semi-amortized VAE (Kim, Wiseman, Miller, Sontag & Rush, ICML 2018; harvardnlp/sa-vae).

The VAE encoder gives the initial variational parameters lambda_0 = (mean, log std) of a diagonal
Gaussian; k steps of stochastic variational inference (plain gradient ascent on the per-example
ELBO) refine them,

    lambda_{t+1} = lambda_t + step_size * grad_lambda ELBO(lambda_t; x),   t = 0 .. k-1,

and q(z|x) = N(mean_k, diag(exp(log_std_k))^2) is the posterior, in training and at test time.
The paper fixes step_size = 1e-3 and varies k in {1, 2, 4, 8}. Each step's ELBO is the VAE's:
one reparameterised sample for E_q[log p(x|z)] and the closed-form KL to N(0, I); the gradient of
its batch sum is the per-example gradient, since example b's ELBO depends only on lambda_b. No
momentum. Each example's gradient w.r.t. the mean and, separately, w.r.t. the log std is clipped
to norm `max_grad_norm` = 5: both reference implementations clip the two blocks at 5 (sa-vae's
OptimN2N, svi_max_grad_norm=5, over the batch tensor; the SAVAE baseline of yookoon/VLAE per
example, which we follow so that an example's steps do not depend on its batch). The paper
states only the step size, but without clipping the fixed step diverges at initialisation with
sigma_x = 0.1: the log-std gradient sigma * eps * grad_z log p(x|z) grows with sigma, and eight
steps of an untrained model sent stds to ~1e2 or to 0 in our checks. `max_grad_norm=None` turns
clipping off.

Training objective and gradients: the loss is -ELBO(lambda_k) (sa-vae's end-to-end "savi" mode;
the VAE's own ELBO at lambda_0 is not added). The SVI gradients are taken with
torch.autograd.grad(..., create_graph=True), so lambda_k is a differentiable function of lambda_0
(hence of the encoder) and of the decoder parameters. Backpropagating the loss therefore gives the
encoder d ELBO(lambda_k) / d lambda_0 through the unrolled steps (Hessian-vector products of the
per-step ELBO, computed exactly by double backward), and the decoder both its direct gradient at
lambda_k and the second-order terms through the steps. This is the gradient sa-vae computes with
finite-difference Hessian-vector products (optim_n2n.py with acc_param_grads=1), here exact.
Why: without create_graph the steps would be constants to autograd, d lambda_k / d lambda_0 = I,
and the encoder would be trained on the refined ELBO as if the steps were not there; with it, the
encoder learns a good *starting point* for the k steps, which is the point of SA-VAE. The cost is
one extra backward pass through the decoder per step (memory grows linearly in k).

Test time: when called with autograd disabled (evaluation runs under torch.no_grad()),
`posterior`/`infer`/`elbo` still run the k steps: they detach lambda_0, enable grad locally and
take the gradients with torch.autograd.grad on lambda only (create_graph=False, no graph kept), so
nothing accumulates in any parameter's .grad and the returned tensors carry no graph. Under grad
mode (training) the steps are differentiable as above. k = 0 is exactly the VAE: the encoder's
(mean, std) are used as they are, with no log/exp round trip.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from .base import EncoderModel, diagonal_gaussian
from .networks import GaussianEncoder
from .registry import register


@register("sa", label="SA", variants=[{"k": 1}, {"k": 2}, {"k": 4}, {"k": 8}])
class SA(EncoderModel):
    def __init__(
        self,
        net,
        latent_dim,
        likelihood,
        num_train,
        k: int = 1,
        step_size: float = 1e-3,
        max_grad_norm: float | None = 5.0,
    ):
        super().__init__(net, latent_dim, likelihood, num_train)
        if k < 0:
            raise ValueError(f"the number of SVI steps k must be >= 0, got {k}")
        self.k = int(k)
        self.step_size = float(step_size)
        self.max_grad_norm = max_grad_norm
        self.encoder = GaussianEncoder(net, latent_dim)  # same name as the VAE's: weights swap

    def step_elbo(self, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """The per-example ELBO each SVI step ascends (one sample, closed-form KL), shape (B,)."""
        q = diagonal_gaussian(mean, log_std.exp())
        return self.log_likelihood(x, q.rsample()) - kl_divergence(q, self.prior())

    def _clip(self, grad: torch.Tensor) -> torch.Tensor:
        """Rescale each example's gradient (a row) to norm <= max_grad_norm."""
        if self.max_grad_norm is None:
            return grad
        norm = grad.norm(dim=-1, keepdim=True)
        return grad * (self.max_grad_norm / (norm + 1e-12)).clamp(max=1.0)

    def svi_steps(
        self, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, differentiable: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k gradient-ascent steps on (mean, log_std); for `differentiable` see the docstring."""
        if not differentiable:
            mean, log_std = mean.detach(), log_std.detach()
        with torch.enable_grad():
            if not mean.requires_grad:
                mean = mean.detach().requires_grad_()
            if not log_std.requires_grad:
                log_std = log_std.detach().requires_grad_()
            for _ in range(self.k):
                objective = self.step_elbo(x, mean, log_std).sum()
                g_mean, g_log_std = torch.autograd.grad(
                    objective, (mean, log_std), create_graph=differentiable
                )
                mean = mean + self.step_size * self._clip(g_mean)
                log_std = log_std + self.step_size * self._clip(g_log_std)
                if not differentiable:
                    mean = mean.detach().requires_grad_()
                    log_std = log_std.detach().requires_grad_()
        if not differentiable:
            mean, log_std = mean.detach(), log_std.detach()
        return mean, log_std

    def refine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x) after the k SVI steps from the encoder's output."""
        mean, std = self.encoder(x)
        if self.k == 0:
            return mean, std
        mean, log_std = self.svi_steps(x, mean, std.log(), differentiable=torch.is_grad_enabled())
        return mean, log_std.exp()

    def posterior(self, x: torch.Tensor):
        return diagonal_gaussian(*self.refine(x))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        q = self.posterior(x)
        return self.log_likelihood(x, q.rsample()) - kl_divergence(q, self.prior())
