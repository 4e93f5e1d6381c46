"""Reports of evaluation scores: the log lines, the metrics-log names, the tables and the spread
over draws. Numbers in, text out: nothing here computes a score."""

import numpy as np

# Any feature network.
FEATURE_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")
# A network with class probabilities.
CLASS_KEYS = ("inception_score", "classes_covered", "class_kl")
SUMMARY_KEYS = FEATURE_KEYS + CLASS_KEYS  # Of every evaluation with the shipped classifier.
# When computed.
OPTIONAL_KEYS = ("memorisation_ratio", "intra_fid", "class_agreement", "inception_fid")


def present_keys(scores: dict) -> tuple[str, ...]:
    """The one-number scores ``scores`` holds, in the tables' order."""
    return tuple(k for k in SUMMARY_KEYS + OPTIONAL_KEYS if k in scores)


def scalar_metrics(scores: dict, prefix: str = "eval/") -> dict[str, float]:
    """The scores that are one number each, named for the metrics log, and the number of samples."""
    return {prefix + k: float(scores[k]) for k in (*present_keys(scores), "num_samples")}


# How the table and the log show each summary score.
# Others: .3f.
_FORMATS = {
    **dict.fromkeys(("kid", "kid_std"), ".4f"),
    **dict.fromkeys(("inception_score", "memorisation_ratio"), ".2f"),
    "classes_covered": "d",
}


def score_lines(scores: dict, seconds: float) -> list[str]:
    """The evaluation's log lines (after "eval step N: "); a conditional model's intra-class FID and
    class agreement on lines of their own."""
    parts = [
        f"FID {scores['fid']:.3f}",
        f"KID {scores['kid']:.4f} +- {scores['kid_std']:.4f}",
        f"precision {scores['precision']:.3f} recall {scores['recall']:.3f}",
        f"density {scores['density']:.3f} coverage {scores['coverage']:.3f}",
    ]
    if "inception_score" in scores:
        parts += [
            f"IS {scores['inception_score']:.2f}",
            f"classes covered {scores['classes_covered']}/10 (KL {scores['class_kl']:.3f})",
        ]
    if "inception_fid" in scores:
        parts.append(f"Inception FID {scores['inception_fid']:.3f}")
    if "memorisation_ratio" in scores:
        parts.append(f"memorisation {scores['memorisation_ratio']:.2f}")
    lines = [" | ".join([*parts, f"{scores['num_samples']} samples", f"{seconds:.1f} s"])]
    if "intra_fid" in scores:
        per_class = " ".join(f"{f:.1f}" for f in scores["intra_fid_per_class"])
        lines.append(f"intra-class FID {scores['intra_fid']:.3f} (per class: {per_class})")
    if "class_agreement" in scores:
        per_class = " ".join(f"{a:.2f}" for a in scores["class_agreement_per_class"])
        agreement = f"{100 * scores['class_agreement']:.1f}% of samples ({per_class})"
        lines.append(f"the classifier agrees with the requested class for {agreement}")
    return lines


def _table_keys(rows):
    """The scores every row has (class agreement is left to the JSON)."""
    return tuple(
        k for k in present_keys(rows[0]) if k != "class_agreement" and all(k in r for r in rows)
    )


# Biased by the number of samples: named with it.
N_DEPENDENT = ("fid", "kid", "kid_std", "intra_fid", "inception_fid")


def metric_name(key: str, num_samples: int) -> str:
    """``fid`` scored on 10,000 samples is ``fid10k`` (StyleGAN2-ADA's convention), on 2,500
    ``fid2500``; scores whose bias does not follow N keep their name."""
    if key not in N_DEPENDENT:
        return key
    count = f"{num_samples // 1000}k" if num_samples % 1000 == 0 else str(num_samples)
    stem = "fid" if "fid" in key else "kid"
    return key.replace(stem, stem + count, 1)


def markdown_table(rows: list[dict]) -> str:
    """The rows' scores, the N-dependent ones named with N when all rows share it."""
    keys = _table_keys(rows)
    counts = sorted({row["num_samples"] for row in rows})
    names = [metric_name(k, counts[0]) for k in keys] if len(counts) == 1 else list(keys)
    table = [
        {
            "step": row["step"],
            "latents": row["latents"],
            **{n: format(row[k], _FORMATS.get(k, ".3f")) for n, k in zip(names, keys, strict=True)},
            "seconds": f"{row['seconds']:.1f}",
        }
        for row in rows
    ]
    return markdown(table)


def markdown(rows: list[dict]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys, the columns); None an empty cell."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += [
        "| " + " | ".join("" if r[k] is None else str(r[k]) for k in keys) + " |" for r in rows
    ]
    return "\n".join(lines)


def spread(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample sd over draws of each summary score: how much a number moves with the
    latents."""
    values = {k: [r[k] for r in rows] for k in _table_keys(rows)}
    return {
        k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))} for k, v in values.items()
    }


def spread_line(summary: dict[str, dict[str, float]], draws: int, num: int) -> str:
    cells = " | ".join(
        f"{metric_name(k, num)} {v['mean']:.4g} +- {v['sd']:.2g}"
        for k, v in summary.items()
        if k != "kid_std"
    )
    return f"mean +- sd over {draws} draws of {num} latents: {cells}"


def training_provenance(evaluator, config, inception=None) -> dict:
    """The record of ``eval/provenance.json``: what the in-training evaluation's numbers are made of
    (one fixed draw; ``python -m dcgan_jax.evaluation --draws=K`` gives the spread over draws)."""
    latents = (
        f"evaluation stream of seed {config.seed} (one fixed draw, the same at every evaluation)"
    )
    provenance = {
        **evaluator.provenance,
        "num_samples": config.eval.num_samples,
        "latents": latents,
        "truncation": 1.0,
    }
    if inception is not None:
        provenance["inception_fid"] = inception.provenance
    return provenance
