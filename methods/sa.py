"""SA: the semi-amortized VAE (Kim, Wiseman, Miller, Sontag & Rush, ICML 2018; harvardnlp/sa-vae).

The VAE encoder gives the initial variational parameters lambda_0 = (mean, s) of a diagonal
Gaussian, s its log-variance or log-std (`parameterisation`); k steps of stochastic variational
inference (plain gradient ascent on the per-example ELBO) refine them,

    lambda_{t+1} = lambda_t + step_size * clip(grad_lambda ELBO(lambda_t; x)),   t = 0 .. k-1,

and q(z|x) = N(mean_k, diag(std(s_k))^2) is the posterior, in training and at test time. Each
step's ELBO is the VAE's: one reparameterised sample for E_q[log p(x|z)] and the closed-form KL to
N(0, I); the gradient of its batch sum is the per-example gradient, since example b's ELBO depends
only on lambda_b. No momentum.

The SVI settings are variant parameters (record paths and config hashes carry them):
- `step_size` = 1e-3: the paper's (section 5: "SA(k) ... k SVI steps with step size 1e-3"); k in
  {1, 2, 4, 8} are the table's variants.
- `max_grad_norm` = 5 and `clip_scope` = "example": not in the paper. Both reference
  implementations clip the mean's and the scale parameter's gradients, separately, at norm 5
  (harvardnlp/sa-vae's OptimN2N, svi_max_grad_norm=5, over the whole batch tensor: `clip_scope =
  "batch"`; yookoon/VLAE's SAVAE baseline per example: "example", which we take so that an
  example's steps do not depend on its batch). Without a clip the paper's step diverges at
  initialisation with sigma_x = 0.1 (the scale gradient grows with sigma; eight steps of an
  untrained model sent stds to ~1e2 or to 0 in our checks). Note what the clip does once trained:
  the per-example gradients are far above 5, so every step has length step_size * 5 and the clip,
  not the step size, sets SA's gain; docs/methods.md's sensitivity table shows the gain per setting
  on the same trained weights. `max_grad_norm=None` turns clipping off.
- `parameterisation` = "log_var": both references take SVI steps on the log-variance (sa-vae's
  logvar, VLAE's SAVAE logvar); "log_std" steps on the log standard deviation, whose gradient is
  twice the log-variance's.

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
from .registry import register

CLIP_SCOPES = ("example", "batch")
PARAMETERISATIONS = ("log_var", "log_std")


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
        clip_scope: str = "example",
        parameterisation: str = "log_var",
    ):
        super().__init__(net, latent_dim, likelihood, num_train)
        if k < 0:
            raise ValueError(f"the number of SVI steps k must be >= 0, got {k}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        if clip_scope not in CLIP_SCOPES:
            raise ValueError(f"clip_scope must be one of {', '.join(CLIP_SCOPES)}, got {clip_scope!r}")
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {', '.join(PARAMETERISATIONS)}, "
                             f"got {parameterisation!r}")
        self.k = int(k)
        self.step_size = float(step_size)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.clip_scope = clip_scope
        self.parameterisation = parameterisation
        # std = exp(s / scale_power): 2 for a log-variance, 1 for a log-std
        self._scale_power = 2.0 if parameterisation == "log_var" else 1.0
        self.encoder = self.base_encoder()  # same name as the VAE's: weights swap

    def std_of(self, scale: torch.Tensor) -> torch.Tensor:
        """The standard deviation from the SVI scale parameter (log-variance or log-std)."""
        return (scale / self._scale_power).exp()

    def scale_of(self, std: torch.Tensor) -> torch.Tensor:
        return self._scale_power * std.log()

    def step_elbo(self, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The per-example ELBO each SVI step ascends (one sample, closed-form KL), shape (B,)."""
        q = diagonal_gaussian(mean, self.std_of(scale))
        return self.log_likelihood(x, q.rsample()) - kl_divergence(q, self.prior())

    def _clip(self, grad: torch.Tensor) -> torch.Tensor:
        """Rescale the gradient to norm <= max_grad_norm: each example's row ("example") or the
        whole batch tensor ("batch")."""
        if self.max_grad_norm is None:
            return grad
        if self.clip_scope == "example":
            norm = grad.norm(dim=-1, keepdim=True)
        else:
            norm = grad.norm()
        return grad * (self.max_grad_norm / (norm + 1e-12)).clamp(max=1.0)

    def svi_steps(
        self, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, differentiable: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k gradient-ascent steps on (mean, scale); for `differentiable` see the docstring."""
        if not differentiable:
            mean, scale = mean.detach(), scale.detach()
        with torch.enable_grad():
            if not mean.requires_grad:
                mean = mean.detach().requires_grad_()
            if not scale.requires_grad:
                scale = scale.detach().requires_grad_()
            for _ in range(self.k):
                objective = self.step_elbo(x, mean, scale).sum()
                g_mean, g_scale = torch.autograd.grad(
                    objective, (mean, scale), create_graph=differentiable
                )
                mean = mean + self.step_size * self._clip(g_mean)
                scale = scale + self.step_size * self._clip(g_scale)
                if not differentiable:
                    mean = mean.detach().requires_grad_()
                    scale = scale.detach().requires_grad_()
        if not differentiable:
            mean, scale = mean.detach(), scale.detach()
        return mean, scale

    def refine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x) after the k SVI steps from the encoder's output."""
        mean, std = self.encoder(x)
        if self.k == 0:
            return mean, std
        mean, scale = self.svi_steps(x, mean, self.scale_of(std), differentiable=torch.is_grad_enabled())
        return mean, self.std_of(scale)

    def posterior(self, x: torch.Tensor):
        return diagonal_gaussian(*self.refine(x))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        q = self.posterior(x)
        return self.log_likelihood(x, q.rsample()) - kl_divergence(q, self.prior())
