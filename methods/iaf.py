"""IAF: inverse autoregressive flow encoder (Kingma, Salimans, Jozefowicz, Chen, Sutskever &
Welling, NeurIPS 2016; openai/iaf).

The VAE encoder gives z_0 ~ N(mean(x), diag std(x)^2) and a context vector h(x) (its hidden
features, the h-dim output of the conv trunk). Then k IAF steps t = 1..k, each with its own MADE
network conditioned on h:

    [m_t, s_t] = MADE_t(z_{t-1}, h),   sigma_t = sigmoid(s_t + forget_bias)
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t                   (the numerically stable update)
    log q(z_k|x) = log N(z_0; mean, std) - sum_t sum_i log sigma_t,i

m_t,i and s_t,i depend on z_{t-1} only through the dimensions before i in step t's order, so each
step's Jacobian is triangular with diagonal sigma_t; the order is reversed between consecutive
steps (even steps use 0..d-1, odd steps d-1..0), which is the usual permutation between IAF steps
done through the MADE degrees instead of permuting z.

MADE (Germain et al. 2015) as in openai/iaf's `ar.mlp`: masked linear layers z -> hidden (the
context enters the first hidden layer through an unmasked linear map of h), ELU, a second masked
hidden layer, then a masked output layer with strictly-earlier connectivity producing (m, s).
Hidden width defaults to the network's h (not given by the paper). The gate mirrors Pyro's
`AffineAutoregressive(stable=True)`: sigmoid of the network output plus a constant forget-gate bias
(`forget_bias`, 2.0 as Pyro's `sigmoid_bias`; Kingma et al. recommend a positive bias of 1 or 2 so
every step starts close to the identity, sigma ~ 0.88).

Training ELBO: one reparameterised z_0 per example, E_q[log q] = -H[N(mean, std)] - E[sum log
sigma], i.e. ELBO = log p(x, z_k) + H[q_0] + sum_t sum_i log sigma_t,i (the base entropy in closed
form, an unbiased and lower-variance estimate). The IWAE proposal is a `FlowPosterior` whose
`rsample_with_log_prob` returns z_k with its density from the forward pass, so IWAE never inverts
the flow; `log_prob(z)` of an arbitrary z inverts it (sequential over dimensions: d MADE passes per
step).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import EncoderModel, diagonal_gaussian
from .registry import register


class FlowPosterior:
    """q(z|x) for a diagonal Gaussian base pushed through an invertible, x-conditioned flow.

    `forward(z0) -> (z, log|det dz/dz0|)` and `inverse(z) -> (z0, log|det dz/dz0| at z0)` have the
    context already bound; shapes (*S, B, d) -> (*S, B, d), (*S, B). Also used by HF.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, forward, inverse):
        self.base = diagonal_gaussian(mean, std)
        self._forward = forward
        self._inverse = inverse

    @property
    def batch_shape(self) -> torch.Size:
        return self.base.batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self.base.event_shape

    def rsample_with_log_prob(self, sample_shape=()):
        z0 = self.base.rsample(torch.Size(sample_shape))
        z, log_det = self._forward(z0)
        return z, self.base.log_prob(z0) - log_det

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.rsample_with_log_prob(sample_shape)[0]

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z0, log_det = self._inverse(z)
        return self.base.log_prob(z0) - log_det


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def hidden_degrees(latent_dim: int, width: int) -> torch.Tensor:
    """MADE degrees 1..d-1 assigned cyclically; all 0 for d = 1 (only the context feeds m, s)."""
    if latent_dim == 1:
        return torch.zeros(width, dtype=torch.long)
    return torch.arange(width) % (latent_dim - 1) + 1


class IAFStep(nn.Module):
    """One IAF step: a context-conditioned MADE giving (m, s) and the gated update."""

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        hidden: int,
        num_layers: int = 2,
        reverse: bool = False,
        forget_bias: float = 2.0,
    ):
        super().__init__()
        d = latent_dim
        order = torch.arange(d - 1, -1, -1) if reverse else torch.arange(d)
        degree_in = torch.empty(d, dtype=torch.long)
        degree_in[order] = torch.arange(1, d + 1)  # order[0] is the first dimension
        self.register_buffer("order", order)
        self.forget_bias = float(forget_bias)

        layers = []
        prev = degree_in
        for _ in range(num_layers):
            deg = hidden_degrees(d, hidden)
            layers.append(MaskedLinear(len(prev), hidden, deg[:, None] >= prev[None, :]))
            prev = deg
        self.hidden_layers = nn.ModuleList(layers)
        self.context = nn.Linear(context_dim, hidden)
        degree_out = torch.cat([degree_in, degree_in])
        self.out = MaskedLinear(hidden, 2 * d, degree_out[:, None] > prev[None, :])

    def made(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s + forget_bias); output i depends on z only through dims earlier in the order."""
        h = self.hidden_layers[0](z) + self.context(context)
        h = F.elu(h)
        for layer in self.hidden_layers[1:]:
            h = F.elu(layer(h))
        m, s = self.out(h).chunk(2, dim=-1)
        return m, s + self.forget_bias

    def forward(self, z: torch.Tensor, context: torch.Tensor):
        m, s = self.made(z, context)
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(-1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor):
        """z with forward(z) = y, by filling dimensions in order (one MADE pass per dimension)."""
        z = torch.zeros_like(y)
        for i in self.order.tolist():
            m, s = self.made(z, context)
            gate = torch.sigmoid(s[..., i])
            value = (y[..., i] - (1 - gate) * m[..., i]) / gate
            onehot = torch.zeros(y.shape[-1], dtype=y.dtype, device=y.device)
            onehot[i] = 1
            z = z + onehot * value.unsqueeze(-1)  # out of place: earlier z's stay in the graph
        _, s = self.made(z, context)
        return z, F.logsigmoid(s).sum(-1)


class IAFFlow(nn.Module):
    """k IAF steps with alternating (reversed) orders; context (B, h) broadcasts over samples."""

    def __init__(self, latent_dim: int, context_dim: int, k: int, hidden: int, num_layers: int,
                 forget_bias: float):
        super().__init__()
        self.steps = nn.ModuleList(
            IAFStep(latent_dim, context_dim, hidden, num_layers, reverse=bool(t % 2),
                    forget_bias=forget_bias)
            for t in range(k)
        )

    def forward(self, z: torch.Tensor, context: torch.Tensor):
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, ld = step(z, context)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, z: torch.Tensor, context: torch.Tensor):
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in reversed(self.steps):
            z, ld = step.inverse(z, context)
            log_det = log_det + ld
        return z, log_det


@register("iaf", label="IAF", variants=[{"k": 1}, {"k": 2}, {"k": 4}, {"k": 8}])
class IAF(EncoderModel):
    def __init__(
        self,
        net,
        latent_dim,
        likelihood,
        num_train,
        k: int = 1,
        made_hidden: int | None = None,
        made_layers: int = 2,
        forget_bias: float = 2.0,
    ):
        super().__init__(net, latent_dim, likelihood, num_train)
        self.encoder = self.base_encoder()
        self.flow = IAFFlow(latent_dim, net.hidden, k, made_hidden or net.hidden, made_layers,
                            forget_bias)

    def posterior(self, x: torch.Tensor) -> FlowPosterior:
        mean, std, h = self.encoder.forward_with_features(x)
        return FlowPosterior(
            mean, std, lambda z: self.flow(z, h), lambda z: self.flow.inverse(z, h)
        )

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        mean, std, h = self.encoder.forward_with_features(x)
        q0 = diagonal_gaussian(mean, std)
        z, log_det = self.flow(q0.rsample(), h)
        return self.log_joint(x, z) + q0.entropy() + log_det
