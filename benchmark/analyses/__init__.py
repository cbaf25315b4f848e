"""The paper's analyses, built on the harness: the speed study (speed), Figure 1 and its grid
posterior (figures, grid_posterior), the comparison with the paper's numbers (compare), the
verdicts on its claims (claims) and the SVI step-size study (svi_sensitivity).

The harness (plan, launch, run, store, aggregate, render, pipeline) never depends on them, except
where the pipeline calls them on request: --claims, --compare-paper, --figures (and keeps a
comparison or claims report that such a request wrote earlier current with its table)."""
