"""benchmark/speed_probe.py: the real probe on this CPU (no speed asserted: a benchmark, not a timed
test), and that it leaves the process as it found it."""

import pytest
import torch

from benchmark import estimate, speed_probe

REAL_PROBE = speed_probe.vae_ms_per_image.__wrapped__  # taken before the conftest pins it; uncached


def test_the_probe_times_vae_steps_and_restores_threads_and_rng():
    torch.set_num_threads(1)
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    ms = REAL_PROBE()
    assert 0 < ms < 1e3  # ms per image of a batch-64 VAE step: finite and positive
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.rand(3), expected_draw)  # the probe's own draws do not leak


def test_without_records_a_cpu_estimate_says_it_was_scaled_by_the_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(speed_probe, "vae_ms_per_image",
                        lambda: 3 * estimate.FALLBACK_TRAIN_MS["vae"])
    from benchmark.plan import make_plan
    from benchmark.profiles import load_profile
    from benchmark.specs import load_table_spec

    tasks = make_plan(load_table_spec("1"), load_profile("claims"), data_root="unused",
                      results_dir=str(tmp_path), methods={"vae"}, dataset_filter={"mnist"},
                      dims={10}).tasks
    plain = estimate.estimate_run(tasks[0], False, [])
    probed = estimate.estimate_run(tasks[0], False, [], probe=True)
    assert probed.seconds == pytest.approx(3 * plain.seconds)
    assert "scaled x3.00 to this machine by 24 timed VAE steps" in probed.source
