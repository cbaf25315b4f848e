"""The plugin protocol every encoder family implements.

A method is an `EncoderModel`: the shared decoder p(x|z) with prior N(0, I), plus its own amortized
posterior q(z|x). The harness only ever calls:

- `loss(x)`      negative ELBO averaged over the batch (what Adam minimises);
- `elbo(x)`      per-example ELBO estimate, shape (B,) (validation / early stopping);
- `posterior(x)` an object with `rsample(sample_shape)` -> (*S, B, d) and `log_prob(z)` -> (*S, B);
                 a torch Distribution with batch shape (B,) and event shape (d,) qualifies. Flows
                 may add `rsample_with_log_prob(sample_shape)` to avoid inverting themselves.
                 This is what the IWAE estimator uses as its proposal;
- `infer(x)`     the test-time inference path that Table 3 times (q's parameters and one sample);
- `on_epoch_start(epoch, num_epochs)` a hook for methods trained in stages (RME);
- `model_complete(epoch, num_epochs)` False while the model trained in (0-based) `epoch` is not yet
                 the method's final model (RME before its last component joins): the trainer neither
                 stops early after such an epoch nor keeps its weights as the best; default True;
- `diagnostics(x)` optional batch means to keep in the record (e.g. mixing weights);
- `training_diagnostics()` optional JSON-able summary of the training just done, kept in the record
                 under `training_diagnostics` (e.g. a mixture's weights over its first steps);
- `take_optimizer_state_copies()` (source, target) parameter pairs whose optimiser state the
                 trainer copies right after `on_epoch_start` (a component that starts as a copy of
                 another also starts with its Adam moments, not with Adam's sign-sized first step);
- `prepare_inference()` precompute whatever test-time inference needs that does not depend on x
                 (called before timing, so a one-off cost is not timed; a method must still
                 never use stale state, so this is an optimisation, not a requirement).

Optional, for the paper's analyses (a method without them raises NotImplementedError there):
- `gaussian_views(x)` {name: (mean, var)}, each (B, d): diagonal Gaussians over z that show the
                 method's posterior: 'q' (q(z|x), moment-matched; the default) and any it is built
                 from ('base': the base encoder N(b, c^2)). Figure 1 draws them;
- `uncertainty(x)` (B,) how uncertain the method is about q(z|x) (GPVAE: Tr V(f|D) + Tr V(h|D));
                 Figure 1 orders inputs by it and correlates it with non-Gaussianity;
- `reference_moments(x)` (mean, var) of q(z|x) computed the straightforward way (as a training-time
                 implementation would), the reference benchmark.analyses.speed times `infer` against;
- `inference_floor()` a callable x -> tensor doing the least computation `infer` must do (its
                 networks' forward passes and the flops of what remains); speed reports infer / floor.

`posterior` and `infer` may run under `torch.no_grad()`; a method that needs gradients at test time
(SA's SVI steps) enables them itself.

Common random numbers. The parts every method shares are initialised from seeds of their own
role, derived from the torch seed in force when the model is built (the harness sets it from the
run's key: `RunKey.init_seed`): the decoder always (here), and the base encoder b(x), c(x) where a
method has one (`self.base_encoder()`). So within one (dataset, dim, split, restart) every method
starts from the same decoder weights and the same base-encoder weights, whatever else it builds
and in whatever order; with the trainer's minibatch order (seeded by the same key) a paired
difference between two methods measures the methods, not their seeds.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch
from torch import nn
from torch.distributions import Independent, Normal

from .networks import GaussianEncoder, NetConfig, make_decoder

ROLE_SEED_MASK = 0x7FFFFFFF


def role_seed(base_seed: int, role: str) -> int:
    """A seed for one network role from the model's base seed, the same in every process."""
    digest = hashlib.sha256(f"{base_seed}:{role}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & ROLE_SEED_MASK


@contextlib.contextmanager
def seeded(seed: int):
    """Draw from torch's CPU generator seeded with `seed`, restoring its state afterwards, so what
    is built inside neither depends on nor changes what was drawn before or after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sample_with_log_prob(posterior, sample_shape: torch.Size | tuple = ()):
    """z ~ q and log q(z), using the posterior's fused path when it has one."""
    fused = getattr(posterior, "rsample_with_log_prob", None)
    if fused is not None:
        return fused(torch.Size(sample_shape))
    z = posterior.rsample(torch.Size(sample_shape))
    return z, posterior.log_prob(z)


def diagonal_gaussian(mean: torch.Tensor, std: torch.Tensor) -> Independent:
    return Independent(Normal(mean, std), 1)


class EncoderModel(nn.Module):
    """Decoder, prior and likelihood shared by all methods; subclasses add the encoder."""

    def __init__(self, net: NetConfig, latent_dim: int, likelihood: nn.Module, num_train: int):
        super().__init__()
        self.num_train = num_train  # size of the training set, for priors over global variables
        self.net_config = net
        self.latent_dim = latent_dim
        self.init_seed = torch.initial_seed()  # the base of the shared parts' role seeds
        with self.role_init("decoder"):
            self.decoder = make_decoder(net, latent_dim)
        self.likelihood = likelihood

    def role_init(self, role: str):
        """Context in which a shared part (`role`) draws its initial weights from its role seed."""
        return seeded(role_seed(self.init_seed, role))

    def base_encoder(self) -> GaussianEncoder:
        """The base encoder x -> (b(x), c(x)), initialised identically in every method that has one."""
        with self.role_init("base_encoder"):
            return GaussianEncoder(self.net_config, self.latent_dim)

    def prior(self) -> Independent:
        zeros = torch.zeros(self.latent_dim, device=self._device())
        return diagonal_gaussian(zeros, torch.ones_like(zeros))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z); z may carry leading sample dims (S, B, d)."""
        return self.likelihood.log_prob(x, self.decoder(z))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_likelihood(x, z) + self.prior().log_prob(z)

    def posterior(self, x: torch.Tensor):
        raise NotImplementedError

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Single-sample Monte Carlo ELBO per example; subclasses may use closed-form parts."""
        z, log_q = sample_with_log_prob(self.posterior(x))
        return self.log_joint(x, z) - log_q

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.elbo(x).mean()

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x).rsample()

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called by the trainer before each epoch (0-based)."""

    def take_optimizer_state_copies(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(source, target) parameters whose optimiser state the trainer should copy now (called
        right after `on_epoch_start`; a method returns each pair once). Default: none."""
        return []

    def model_complete(self, epoch: int, num_epochs: int) -> bool:
        """Whether the model after (0-based) `epoch` is the method's final model; default: always."""
        return True

    def prepare_inference(self) -> None:
        """Build x-independent test-time state now rather than on the first call; default: none."""

    def gaussian_views(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{name: (mean, var)} per input, each (B, d); default: q(z|x)'s moments as 'q'."""
        q = self.posterior(x)
        return {"q": (q.mean, q.variance)}

    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the method's uncertainty about q(z|x); optional (Figure 1)."""
        raise NotImplementedError(f"{type(self).__name__} has no uncertainty score")

    def reference_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var) of q(z|x) the straightforward way; optional (benchmark.analyses.speed)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference implementation")

    def inference_floor(self):
        """A callable x -> tensor: the least computation `infer` must do; optional (speed)."""
        raise NotImplementedError(f"{type(self).__name__} states no compute floor")

    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Batch means of whatever the method wants on record about its posterior (a mixture: each
        component's mean mixing weight); the harness averages them over the test images and
        stores them in the run's record under `diagnostics`. Default: none."""
        return {}

    def training_diagnostics(self) -> dict:
        """A JSON-able summary of the training this model went through that the method wants on
        record (a mixture: its weights over the first training steps, the winning component);
        the harness stores it in the run's record under `training_diagnostics` when not empty.
        Default: none."""
        return {}

    def _device(self) -> torch.device:
        return next(self.parameters()).device
