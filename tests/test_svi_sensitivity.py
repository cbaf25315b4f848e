"""The SVI sensitivity table: one row per setting, SA(k) gains as columns, NaN shown as unstable."""

from benchmark.analyses.svi_sensitivity import GRID, STEPS, to_markdown


def test_table_has_a_row_per_setting_and_marks_non_finite_gains_unstable():
    rows = []
    for i, (step, clip, scope, param) in enumerate(GRID):
        for k in STEPS:
            gain = float("nan") if clip is None and step == 1e-3 else i + k / 10
            rows.append(dict(k=k, step_size=step, max_grad_norm=clip, clip_scope=scope,
                             parameterisation=param, iwae=600 + gain, gain=gain))
    text = to_markdown({"key": "t/mnist/d10/vae-default/s0-r0", "vae_iwae": 600.0, "iwae_k": 100,
                        "test_images": 1000, "rows": rows})
    body = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert len(body) == len(GRID)
    assert body[0] == "| 0.001 | 5.0 | example | log_var | +0.10 | +0.40 |"
    assert [line for line in body if "unstable" in line] == [
        "| 0.001 | none | - | log_var | unstable | unstable |"]
