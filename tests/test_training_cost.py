"""benchmark.analyses.training_cost on a tiny setting: the shape of what it prints and writes,
GPVAE's training floor, bad input as one error line. (No timings are asserted: speed is measured
by the benchmark, not by tests.)"""

import json

import pytest
import torch
from markdown_tables import table

from benchmark.analyses import training_cost
from benchmark.datasets import load_dataset
from benchmark.specs import load_dataset_settings
from methods import NetConfig, get_method
from methods.iaf import IAF
from methods.likelihoods import GaussianLikelihood

FAMILIES = ["VAE", "SA(1)", "IAF(1)", "HF(1)", "ME(2)", "RME(2)", "GPVAE", "VLAE(2)"]


def test_every_family_at_every_dim_and_precision(mnist_root, tmp_path, capsys):
    out_json = tmp_path / "cost.json"
    assert training_cost.main([
        "--data-root", str(mnist_root), "--dims", "2", "--batch-size", "4", "--steps", "2",
        "--warmup", "1", "--threads", "1", "--precision", "fp32,bf16", "--json", str(out_json),
    ]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("flush-to-zero: ") for line in lines)
    assert any(line.startswith("bf16: ") for line in lines)
    assert sum(line.startswith("| dim(z) | VAE ms |") for line in lines) == 2  # fp32, bf16
    head, body = table(lines, "| dim(z) | VAE ms |")
    assert head == ["dim(z)", "VAE ms", *FAMILIES[1:], "GPVAE floor", "GPVAE / floor"]
    assert [row[0] for row in body] == ["2"]
    assert all(cell.startswith("x") for row in body for cell in row[2:])
    head, body = table(lines, "| dim(z) | VAE | SA(1)")  # bf16 against fp32
    assert head == ["dim(z)", *FAMILIES, "GPVAE floor"] and len(body) == 1
    head, body = table(lines, "| sweep |")
    assert head == ["sweep", "runs", "fp32 CPU time", "bf16 CPU time", "fp32 wall time",
                    "bf16 wall time"]
    assert [row[1] for row in body] == ["18", "198", "3,960"]
    figures = json.loads(out_json.read_text())
    assert figures["flush_denormal"] in (True, False)
    assert len(figures["ms"]) == 2 * (len(FAMILIES) + 1)  # precisions x (families + floor)
    assert all(v > 0 for v in figures["ms"].values())
    assert figures["ratio_to_vae"]["fp32/d2/vae"] == 1.0
    for precision in ("fp32", "bf16"):
        sweeps = figures["projections"][precision]
        assert [s["runs"] for s in sweeps] == [18, 198, 3960]
        assert all(s["without_figure"] == 0 and s["wall_hours"] > 0 for s in sweeps)


def test_families_subset_leaves_other_rows_without_a_figure(mnist_root, capsys):
    assert training_cost.main(["--data-root", str(mnist_root), "--dims", "2", "--batch-size", "2",
                               "--steps", "1", "--warmup", "0", "--families", "gpvae"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head, _ = table(lines, "| dim(z) | VAE ms |")
    assert head == ["dim(z)", "VAE ms", "GPVAE", "GPVAE floor", "GPVAE / floor"]
    _, body = table(lines, "| sweep |")
    assert "runs without a figure" not in " ".join(body[0])
    assert "runs without a figure" in " ".join(body[1])


def test_gpvae_training_floor_steps_like_a_model():
    torch.manual_seed(0)
    net, d = NetConfig((1, 28, 28), num_conv=3, hidden=16), 3
    model = get_method("gpvae").build({}, net=net, latent_dim=d, likelihood=GaussianLikelihood(0.1),
                                      num_train=100)
    floor = model.training_floor()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = floor.loss(torch.rand(4, 1, 28, 28))
    loss.backward()
    assert torch.isfinite(loss)
    # as many matmul weights per form as the factor has entries (p (p + 1) / 2 per j, rounded up)
    p = net.hidden
    assert all(w.shape == (p, d * (p // 2 + 1)) and w.grad is not None for w in floor.forms)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # copies


def test_the_timed_step_is_the_trainers(mnist_root, monkeypatch):
    """build_timed steps each model with benchmark.train.make_step, the trainer's step: under bf16
    a method's declared fp32_modules run outside autocast, as in training, and a step moves the
    weights with Adam."""
    monkeypatch.setattr(IAF, "fp32_modules", ("flow",), raising=False)
    built, build = [], training_cost.build
    monkeypatch.setattr(training_cost, "build", lambda *a: built.append(build(*a)) or built[-1])
    rows = [r for r in training_cost.table_families() if r.method == "iaf"]
    settings = load_dataset_settings("mnist")
    data = load_dataset(settings.loader("mnist"), str(mnist_root))
    (timed,) = training_cost.build_timed(rows, [2], ["bf16"], settings, data, torch.device("cpu"))
    (iaf,) = built
    made, decoder = [], []
    iaf.flow.steps[-1].out.register_forward_hook(lambda m, a, out: made.append(out.dtype))
    iaf.decoder.register_forward_hook(lambda m, a, out: decoder.append(out.dtype))
    before = [p.detach().clone() for p in iaf.parameters()]
    timed.step(data.to_float(data.train[:4]))
    assert made == [torch.float32] and decoder == [torch.bfloat16]
    assert any(not torch.equal(a, b) for a, b in zip(before, iaf.parameters(), strict=True))


@pytest.mark.parametrize("args", [["--dims", "0"], ["--precision", "fp16"],
                                  ["--families", "nope"], ["--precision", "fp32,fp32"]])
def test_bad_argument_is_one_error_line(capsys, args):
    assert training_cost.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
