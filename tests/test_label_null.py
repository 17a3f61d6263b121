"""The random-label null of cos(v_int, v_prompt) (valuemech.label_null) and where a run shows it."""

from __future__ import annotations

import numpy as np
import torch

from valuemech.decompose import cosine
from valuemech.label_null import cosine_line, permuted_diffs, random_label_null, read_null
from valuemech.values import VALUES
from valuemech.vectors import extract_vectors


def test_permuted_diffs_equal_a_hand_computation():
    x = torch.arange(12, dtype=torch.float64).reshape(4, 3) ** 1.5
    labels = np.array([1, 0, 0, 1])
    perms = np.array([[0, 1, 2, 3], [1, 0, 3, 2]])
    d = permuted_diffs(x, labels, perms)
    torch.testing.assert_close(d[0], (x[0] + x[3]) / 2 - (x[1] + x[2]) / 2, rtol=0, atol=1e-12)
    # second permutation: labels[[1, 0, 3, 2]] = [0, 1, 1, 0]
    torch.testing.assert_close(d[1], (x[1] + x[2]) / 2 - (x[0] + x[3]) / 2, rtol=0, atol=1e-12)


def _planted(n: int, d: int, signal: float, seed: int):
    """Per-response means where one direction carries the label in both conditions."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    means, labels = {}, {}
    for c in ("intrinsic", "prompted"):
        y = (torch.arange(n) % 3 == 0).to(torch.float64)
        means[c] = torch.randn(n, d, generator=g, dtype=torch.float64) + signal * y[:, None] * direction
        labels[c] = {"power": y.long().numpy(), "tradition": y.long().numpy()}
    return means, labels


def test_planted_direction_is_outside_the_null_and_the_null_centres_on_zero():
    means, labels = _planted(90, 32, 3.0, 0)
    null = random_label_null(means, labels, layer=4, min_group=5, n_permutations=300, seed=1)
    observed = {}
    for v in ("power", "tradition"):
        vec = {c: means[c][labels[c][v] == 1].mean(0) - means[c][labels[c][v] == 0].mean(0) for c in means}
        observed[v] = float(cosine(vec["intrinsic"], vec["prompted"]))
        lo, hi = null["per_value"][v]
        assert lo < 0 < hi < observed[v]
    assert null["layer"] == 4 and null["n_permutations"] == 300
    line = cosine_line(observed, null, 4)
    assert "random labels" in line and "2/2 values above" in line
    # the same seed gives the same null; another seed another one
    again = random_label_null(means, labels, 4, 5, 300, seed=1)
    assert again == null
    assert random_label_null(means, labels, 4, 5, 300, seed=2)["per_value"] != null["per_value"]


def test_undecided_rows_are_left_out_and_small_groups_get_no_null():
    means, labels = _planted(30, 8, 0.0, 3)
    labels["intrinsic"]["power"] = labels["intrinsic"]["power"].copy()
    labels["intrinsic"]["power"][:27] = -1  # 3 decided rows left: under min_group
    null = random_label_null(means, labels, 0, 2, 50)
    assert "power" not in null["per_value"] and "tradition" in null["per_value"]


def test_extract_keeps_the_means_the_null_needs(tiny_llama):
    lm = tiny_llama
    recs = []
    for i in range(24):
        cond = "intrinsic" if i % 2 == 0 else "prompted"
        recs.append({"id": f"r{i}", "condition": cond,
                     "prompt_token_ids": lm.prompt_ids(f"query {i}", None if cond == "intrinsic" else "Be kind."),
                     "response_token_ids": list(f"answer number {i} ".encode())})
    labels = {r["id"]: {v: (int(r["id"][1:]) // 2) % 2 == 0 for v in VALUES} for r in recs}
    layer = lm.n_layers // 2
    vv = extract_vectors(lm, recs, labels, "test", batch_size=5, min_group=3, progress=False, keep_layer=layer)
    off = extract_vectors(lm, recs, labels, "test", batch_size=5, min_group=3, progress=False)
    assert off.kept is None and vv.kept.layer == layer
    for k in vv.vectors:  # keeping the means does not touch the vectors
        assert torch.equal(vv.vectors[k], off.vectors[k])
    # the kept means give back the vectors at that block: the null permutes the same data
    for c in ("intrinsic", "prompted"):
        y = vv.kept.labels[c]["power"]
        diff = permuted_diffs(vv.kept.means[c], y, np.arange(len(y))[None])[0]
        torch.testing.assert_close(diff, vv.vectors[f"{c}.power"][layer], rtol=0, atol=1e-12)
    null = random_label_null(vv.kept.means, vv.kept.labels, layer, 3, 40)
    assert set(null["per_value"]) == set(VALUES)
    assert all(-1 <= lo <= hi <= 1 for lo, hi in null["per_value"].values())


def test_the_extract_stage_writes_the_null_and_the_summary_shows_it(smoke_dir):
    from valuemech.pipeline import summary_rows
    from valuemech.report.findings import summary_lines
    from valuemech.rundir import RunDir

    run = RunDir(smoke_dir)
    null = read_null(run.load_vectors().metadata)
    rows, layer = summary_rows(run)
    assert null is not None and null["layer"] == layer and null["n_permutations"] == 200
    with_cos = [r for r in rows if r["cosine"] is not None]
    assert with_cos and all(r["null"] == null["per_value"][r["value"]] for r in with_cos)
    assert any("random labels" in line for line in summary_lines(run, n_boot=20))
