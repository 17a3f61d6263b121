"""The random-label null of cos(v_int, v_prompt): how alike the two conditions' vectors look by chance.

Two difference-in-means vectors over the same model share structure whatever the labels (the
residual stream's common directions, response length, the system prompt's presence), so their
cosine is not near 0 even for unrelated groups. The null keeps each condition's per-response means
at one block, permutes each value's labels within each condition (group sizes kept), and takes the
cosine of the two permuted difference-in-means vectors, ``n_permutations`` times per value.
"""

from __future__ import annotations

import numpy as np
import torch

from valuemech.decompose import cosine

N_PERMUTATIONS = 200  # label permutations per value (the extract stage's)


def permuted_diffs(means: torch.Tensor, labels: np.ndarray, perms: np.ndarray) -> torch.Tensor:
    """Difference in means ``[P, d]`` (float64) of ``means`` ``[n, d]`` under each row of ``perms``
    ``[P, n]`` (indices into ``labels``): row p takes ``labels[perms[p]]`` as the expressed side."""
    y = torch.from_numpy(labels[perms].astype(np.float64))  # [P, n]
    k = y.sum(1, keepdim=True)
    x = means.double()
    return (y @ x) / k - ((1 - y) @ x) / (y.shape[1] - k)


def random_label_null(means: dict[str, torch.Tensor], labels: dict[str, dict[str, np.ndarray]], layer: int,
                      min_group: int, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> dict:
    """The null at ``layer`` from per-response means (``means[condition]`` ``[n, d]``, e.g. extract's
    ``ValueVectors.kept``) and labels (``labels[condition][value]``: 1 expressed, 0 not, -1 undecided;
    undecided rows are left out).

    Returns ``{"layer", "n_permutations", "seed", "per_value": {value: [2.5%, 97.5%]}, "range": [2.5%, 97.5%]
    over every value's permutations}``; a value with a group under ``min_group`` in either condition is
    left out, as extract leaves out its vector."""
    rng = np.random.default_rng(seed)
    per_value: dict[str, list[float]] = {}
    pooled: list[torch.Tensor] = []
    values = sorted(set(labels["intrinsic"]) & set(labels["prompted"]))
    for v in values:
        diffs = []
        for c in ("intrinsic", "prompted"):
            lab = labels[c][v]
            keep = lab >= 0
            y = lab[keep]
            if min(int(y.sum()), int((1 - y).sum())) < min_group:
                break
            perms = np.argsort(rng.random((n_permutations, len(y))), axis=1)
            diffs.append(permuted_diffs(means[c][torch.from_numpy(keep)], y, perms))
        else:
            cos = cosine(diffs[0], diffs[1])
            pooled.append(cos)
            per_value[v] = [float(x) for x in torch.quantile(cos, torch.tensor([0.025, 0.975], dtype=cos.dtype))]
    out = {"layer": layer, "n_permutations": n_permutations, "seed": seed, "per_value": per_value, "range": None}
    if pooled:
        allc = torch.cat(pooled)
        out["range"] = [float(x) for x in torch.quantile(allc, torch.tensor([0.025, 0.975], dtype=allc.dtype))]
    return out


def read_null(metadata: dict[str, str]) -> dict | None:
    """The null a vectors file's metadata carries (None for files written before it existed)."""
    import json

    text = metadata.get("random_label_null")
    return json.loads(text) if text else None


def cosine_line(cos: dict[str, float], null: dict | None, layer: int) -> str:
    """One line: the range of cos(v_int, v_prompt) at ``layer`` over values, beside the random-label
    range and how many values lie above their own null's 97.5th percentile."""
    line = f"cos(v_int, v_prompt) at block {layer}: {min(cos.values()):+.2f} … {max(cos.values()):+.2f} over {len(cos)} values"
    if not null or null.get("layer") != layer or not null.get("range"):
        return line
    lo, hi = null["range"]
    per = null["per_value"]
    above = sum(1 for v, c in cos.items() if v in per and c > per[v][1])
    return (f"{line}; random labels {lo:+.2f} … {hi:+.2f} (95% of {null['n_permutations']} label permutations per "
            f"value); {above}/{len([v for v in cos if v in per])} values above their own null's 97.5th percentile")
