"""Adam training with validation-ELBO model selection, early stopping and per-epoch checkpoints.

Step size (the profile's `lr_schedule`, our choice: the paper names none): "constant", or "cosine",
lr_at_step(): Adam's lr decays as lr * (1 + cos(pi t / T)) / 2 over the T = epochs x batches per
epoch steps planned, set before each step from the step count alone (so resuming from a checkpoint
needs no scheduler state and is bit-identical). With early stopping the schedule still spans the
planned epochs.

Precision (the profile's `precision`): "fp32", or "bf16": each step's forward pass and loss run
under torch.autocast(dtype=torch.bfloat16) (matmuls and convolutions in bf16, the parameters, their
gradients and Adam in fp32; backward outside autocast, as torch advises). The validation ELBO here
and every evaluation after training (IWAE, ELBO: benchmark.evaluate) run without autocast, in fp32.
bf16 is used only where it is fast: a CUDA device of compute capability 8.0 or later, or a CPU
with avx512_bf16 or amx_bf16 (x86) or bf16 (ARM). Asked for anywhere else, the run is refused
with one error line (PrecisionUnavailable): its config hash says bf16, so training it in fp32
would file fp32 numbers under bf16 (and emulated bf16 is slower than fp32).

A method keeps parts of its computation out of autocast by naming submodules in a class attribute
`fp32_modules` (e.g. ("flow",)): in bf16 training each of them and every module inside it runs with
autocast off and its bf16 tensor arguments cast to fp32, so their outputs are fp32 and what is
computed from them stays fp32 by type promotion. Work that is not a module call the method wraps
itself in `with torch.autocast(x.device.type, enabled=False):` on `.float()` inputs (a no-op in
fp32 runs).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import platform
import time
from pathlib import Path

import torch

from .evaluate import batched_mean
from .store import load_checkpoint
from .store import save_checkpoint as save_atomic  # torch.save through the store's atomic writer

log = logging.getLogger("gpvae_bench")

# CPU features that make bf16 matmuls and convolutions fast (native bf16 dot products / tiles):
# x86's AVX512-BF16 and AMX-BF16, ARM's BF16 (and SVE's)
FAST_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"})


class NonFiniteLoss(FloatingPointError):
    pass


class PrecisionUnavailable(RuntimeError):
    """bf16 asked for on hardware without fast bf16 (one line: what is missing, what to do)."""


def bf16_flags_in_cpuinfo(text: str) -> frozenset[str]:
    """FAST_BF16_CPU_FLAGS among /proc/cpuinfo's 'flags' (x86) and 'Features' (ARM) lines."""
    flags: set[str] = set()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags & FAST_BF16_CPU_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_bf16_features() -> frozenset[str]:
    """Which of FAST_BF16_CPU_FLAGS this CPU has: Linux's /proc/cpuinfo, else (macOS, Windows)
    torch's own cpuinfo, torch.cpu.get_capabilities(). (torch.backends.cpu.get_cpu_capability()
    names the vector ISA torch dispatches to, e.g. 'AVX512', which does not say whether bf16 is
    native.)"""
    try:
        return bf16_flags_in_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        capabilities = getattr(torch.cpu, "get_capabilities", None)
        flags = {k for k, v in (capabilities() if capabilities else {}).items() if v is True}
        return frozenset(flags & FAST_BF16_CPU_FLAGS)


def cpu_has_fast_bf16() -> bool:
    return bool(cpu_bf16_features())


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype a training step autocasts to on `device`: None for fp32 (no autocast),
    torch.bfloat16 for bf16 where the hardware has it; PrecisionUnavailable where it has not."""
    if precision == "fp32":
        return None
    if precision != "bf16":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.bfloat16
            why = f"the GPU ({torch.cuda.get_device_name(device)}) has no native bf16 (before sm_80)"
    elif device.type == "cpu":
        if cpu_has_fast_bf16():
            return torch.bfloat16
        why = (f"this CPU ({platform.processor() or platform.machine()}) has no fast bf16 (none of "
               f"the flags {', '.join(sorted(FAST_BF16_CPU_FLAGS))})")
    else:
        why = f"bf16 training is for cpu and cuda devices, not {device.type}"
    raise PrecisionUnavailable(f"precision bf16 refused: {why}; run it on hardware that has it, or "
                               "with precision fp32")


def _to_fp32(value):
    if torch.is_tensor(value):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, tuple | list):
        return type(value)(_to_fp32(v) for v in value)
    return value


@contextlib.contextmanager
def fp32_modules(model: torch.nn.Module, device_type: str):
    """While in force, the submodules `model.fp32_modules` names, and every module inside them,
    run with autocast off and their bf16 / fp16 tensor arguments cast to fp32."""
    names = tuple(getattr(model, "fp32_modules", ()) or ())
    if not names:
        yield
        return
    active: list = []  # the autocast-off contexts entered by modules running now, innermost last

    def enter(module, args, kwargs):
        context = torch.autocast(device_type, enabled=False)
        context.__enter__()
        active.append(context)
        return _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}

    def leave(module, args, output):  # also when forward raised (always_call)
        if active:
            active.pop().__exit__(None, None, None)

    handles = []
    try:
        for name in names:
            for module in model.get_submodule(name).modules():
                handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
                handles.append(module.register_forward_hook(leave, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def autocast_step(model: torch.nn.Module, device_type: str, dtype: torch.dtype | None):
    """Around one step's forward pass and loss: nothing for fp32 (dtype None); else autocast to
    `dtype`, with the model's `fp32_modules` out of it."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type, dtype=dtype), fp32_modules(model, device_type):
        yield


def make_step(model: torch.nn.Module, opt: torch.optim.Optimizer, dtype: torch.dtype | None):
    """step(x) -> loss: one training step, the one train() takes and the one
    benchmark.analyses.training_cost, speed and gpu_check time. Forward pass and loss under
    autocast_step (dtype None: fp32, no autocast); NonFiniteLoss before any gradient is taken from
    a loss that is not finite; then zero_grad, backward and Adam, outside autocast. Returns the
    loss, detached."""
    device_type = next(model.parameters()).device.type

    def step(x: torch.Tensor) -> torch.Tensor:
        with autocast_step(model, device_type, dtype):
            loss = model.loss(x)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def lr_at_step(schedule: str, lr: float, step: int, total_steps: int) -> float:
    """Adam's lr for step `step` (0-based) of `total_steps` under `schedule` (module docstring)."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown lr schedule {schedule!r}")


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    # The fused kernel is the same update in one pass over each tensor: on a CPU it stepped GPVAE's
    # 6.5M covariance parameters 3x faster than the default per-tensor loop.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def copy_optimizer_state(opt: torch.optim.Optimizer, pairs) -> int:
    """Give each target parameter a copy of its source's optimiser state (Adam's moments and step
    count); returns how many had state to copy. A parameter without state (never stepped) is left
    without, as Adam would have it."""
    copied = 0
    for source, target in pairs:
        state = opt.state.get(source)
        if state:
            opt.state[target] = {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                                 for k, v in state.items()}
            copied += 1
    return copied


def train(
    model,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    *,
    to_input,
    epochs: int,
    batch_size: int,
    lr: float,
    eval_batch_size: int,
    patience: int | None,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_tag: str = "",
    precision: str = "fp32",
    lr_schedule: str = "constant",
) -> dict:
    """Train in place; on return the model holds the weights of the best validation-ELBO epoch
    among those after which `model.model_complete(epoch, epochs)` holds (every epoch, but for
    staged methods such as RME); early stopping (`patience`) also waits for the model to be complete.

    With `checkpoint`, state (weights, optimiser, epoch, RNG, best weights) is saved after every
    epoch and training resumes from it if the file exists and carries the same `checkpoint_tag`
    (the run's config hash), so a requeued job picks up where it was and an edited config does not.

    `precision` "bf16": each step's forward pass and loss under bf16 autocast (module docstring);
    PrecisionUnavailable before anything is trained where the hardware has no fast bf16.
    """
    device = next(model.parameters()).device
    device_type, dtype = device.type, autocast_dtype(precision, device)
    if dtype is not None:
        log.info("training in %s: autocast on %s around forward and loss; evaluation in fp32",
                 precision, device_type)
    opt = make_optimizer(model, lr)
    step = make_step(model, opt, dtype)
    order_gen = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "best_val": -math.inf, "best_epoch": -1, "best_weights": None,
             "history": [], "resumed_from_epoch": None}
    saved = load_checkpoint(checkpoint) if checkpoint else None
    if saved is not None and saved.get("tag") != checkpoint_tag:
        log.warning("ignoring checkpoint %s: made with another configuration", checkpoint)
        saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        order_gen.set_state(saved["order_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["train_state"]
        state["resumed_from_epoch"] = state["epoch"]
        log.info("resumed from checkpoint at epoch %d", state["epoch"])

    n = len(train_images)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    for epoch in range(state["epoch"], epochs):
        start = time.perf_counter()
        model.train()
        model.on_epoch_start(epoch, epochs)
        copy_optimizer_state(opt, model.take_optimizer_state_copies())
        total = 0.0
        for i, idx in enumerate(torch.randperm(n, generator=order_gen).split(batch_size)):
            if lr_schedule != "constant":
                step_lr = lr_at_step(lr_schedule, lr, epoch * steps_per_epoch + i, total_steps)
                for group in opt.param_groups:
                    group["lr"] = step_lr
            try:
                loss = step(to_input(train_images[idx]))
            except NonFiniteLoss as err:
                raise NonFiniteLoss(f"{err} at epoch {epoch + 1}") from None
            total += loss.item() * len(idx)
        model.eval()
        val_elbo = batched_mean(model.elbo, val_images, eval_batch_size, to_input)
        # a staged method (RME) is not its final model until its last stage has begun: such an
        # epoch is neither kept as the best nor a reason to stop early (methods.base)
        complete = model.model_complete(epoch, epochs)
        improved = complete and val_elbo > state["best_val"]
        if improved:
            state.update(best_val=val_elbo, best_epoch=epoch + 1,
                         best_weights=copy.deepcopy(model.state_dict()))
        state["history"].append({"epoch": epoch + 1, "train_elbo": -total / n,
                                 "val_elbo": val_elbo, "seconds": time.perf_counter() - start})
        state["epoch"] = epoch + 1
        log.info("epoch %d/%d  train ELBO %.1f  val ELBO %.1f%s  (%.1fs)", epoch + 1, epochs,
                 -total / n, val_elbo, " *" if improved else "", time.perf_counter() - start)
        if checkpoint is not None:
            save_atomic(checkpoint, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "order_rng": order_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "train_state": state, "tag": checkpoint_tag,
            })
        if complete and patience is not None and epoch + 1 - state["best_epoch"] >= patience:
            log.info("early stop: no better validation ELBO for %d epochs", patience)
            break

    model.load_state_dict(state["best_weights"])
    return {
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_elbo": state["best_val"],
        "final_train_elbo": state["history"][-1]["train_elbo"],
        "history": state["history"],
        "resumed_from_epoch": state["resumed_from_epoch"],
    }
