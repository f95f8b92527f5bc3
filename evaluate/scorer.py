"""`winnow eval scorer`: how well a quality or toxicity scorer separates documents the user labelled.

The scorer is a model (a fastText `.bin`/`.ftz` or a Hugging Face directory: the probability of one of
its labels is the score) or a stage config (`quality`/`toxicity`, alone or in a run config): the stage
scores the texts exactly as a run would, and its own rule (its thresholds) is measured too. Metrics
come from scikit-learn; their 95% intervals from a seeded bootstrap over the labelled documents.

"Selected" means scoring at or above a threshold: a quality stage keeps those documents, a toxicity
stage drops them. The positive label is what the score should find (good documents for quality,
toxic ones for toxicity).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.evaluate.common import bootstrap_interval

SHARES = [i / 10 for i in range(1, 10)]


@dataclass
class Scored:
    """Scores of labelled texts, what produced them, and which texts the stage's own rule selects."""

    scores: np.ndarray
    scorer: str
    rule: str | None = None
    rule_selected: np.ndarray | None = None  # bool: texts the rule keeps (quality) or drops (toxicity)
    rule_action: str = "keeps"


def score_texts(model: str, texts: list[str], stage: str | None = None, label: str | None = None) -> Scored:
    """Score `texts` with a model (file or directory) or the quality/toxicity stage of a YAML config."""
    path = Path(model)
    if path.suffix in (".yaml", ".yml"):
        return _score_with_stage(path, texts, stage)
    from winnow.scorers.config import ScorerConfig, load_scorer, model_file_problem, positive_label

    kind = "transformer" if path.is_dir() else "fasttext"
    problem = model_file_problem(model, kind)
    if problem:
        raise FileNotFoundError(f"eval scorer: {model}: {problem}")
    config = ScorerConfig(model=model, kind=kind)
    which = positive_label(config, label)
    probs = load_scorer(config).predict_all(texts)
    if which not in probs:
        raise ValueError(f"eval scorer: {model} has no label {which!r} (labels: {sorted(probs)})")
    return Scored(np.asarray(probs[which], dtype=np.float64), f"{model} (the probability of {which!r})")


def _score_with_stage(path: Path, texts: list[str], stage_name: str | None) -> Scored:
    import pyarrow as pa
    import yaml

    from winnow.schemas.config import stage_configs
    from winnow.schemas.documents import documents_table
    from winnow.stages import STAGES

    if not path.is_file():
        raise FileNotFoundError(f"eval scorer: no config file {path}")
    data = yaml.safe_load(path.read_text())
    entries = data["stages"] if isinstance(data, dict) and "stages" in data else [data]
    scored = [e for e in entries if isinstance(e, dict) and e.get("name") in ("quality", "toxicity")
              and (stage_name is None or e["name"] == stage_name)]
    if len(scored) != 1:
        names = [e.get("name") for e in entries if isinstance(e, dict)]
        raise ValueError(f"eval scorer: {path} must hold one quality or toxicity stage"
                         f"{f' named {stage_name!r}' if stage_name else ''} (it has {names}); choose with --stage")
    config = stage_configs()[scored[0]["name"]].model_validate(scored[0])
    stage = STAGES[config.name](config)
    columns = stage.score_here(texts)
    where = f"the {config.name} stage of {path}"
    if config.mode != "filter" or getattr(config, "threshold", 0) is None:  # annotate, or a corpus-wide top share
        return Scored(columns[stage.primary].astype(np.float64), where)
    table = documents_table(texts)
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values, pa.float32()))
    keep = stage.decide(table)[0]
    if config.name == "quality":
        return Scored(columns[stage.primary].astype(np.float64), where, f"quality_score >= {config.threshold}",
                      keep, "keeps")
    rule = " or ".join(f"toxicity_{k} > {v}" for k, v in config.thresholds.items())
    return Scored(columns[stage.primary].astype(np.float64), where, rule, ~keep, "drops")


def _precision_recall(selected: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    tp = int((selected & positive).sum())
    precision = tp / int(selected.sum()) if selected.any() else math.nan
    return precision, tp / max(int(positive.sum()), 1)


def evaluate(scored: Scored, positive: np.ndarray, resamples: int = 1000, seed: int = 0,
             target_precision: float | None = None, target_recall: float | None = None) -> dict:
    """Every figure `winnow eval scorer` prints and draws, as one dict."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    scores, n = scored.scores, len(scored.scores)
    if positive.all() or not positive.any():
        raise ValueError(f"eval scorer: the labels need both classes ({int(positive.sum())} positive of {n})")

    def on(metric):
        def resampled(idx: np.ndarray) -> float:
            labels = positive[idx]
            return metric(labels, scores[idx]) if 0 < labels.sum() < len(labels) else math.nan
        return resampled

    result: dict = {
        "scorer": scored.scorer, "documents": n, "positives": int(positive.sum()),
        "roc_auc": float(roc_auc_score(positive, scores)),
        "roc_auc_ci": bootstrap_interval(on(roc_auc_score), n, resamples, seed),
        "pr_auc": float(average_precision_score(positive, scores)),
        "pr_auc_ci": bootstrap_interval(on(average_precision_score), n, resamples, seed + 1),
    }
    bounded = scores.min() >= 0 and scores.max() <= 1
    cuts = SHARES if bounded else list(np.linspace(scores.min(), scores.max(), 11)[1:-1])
    result["thresholds"] = [(float(t), float((scores >= t).mean()), *_precision_recall(scores >= t, positive))
                            for t in cuts]
    order = np.argsort(-scores, kind="stable")
    shares = []
    for share in SHARES:
        k = math.floor(n * share)
        selected = np.zeros(n, dtype=bool)
        selected[order[:k]] = True
        shares.append((share, float(scores[order[k - 1]]) if k else math.nan, *_precision_recall(selected, positive)))
    result["shares"] = shares
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.argsort(scores, kind="stable")] = np.arange(n)
    deciles = ranks * 10 // n
    result["calibration"] = [(d + 1, int((deciles == d).sum()), float(scores[deciles == d].min()),
                              float(scores[deciles == d].max()), float(scores[deciles == d].mean()),
                              float(positive[deciles == d].mean())) for d in range(10) if (deciles == d).any()]
    precision, recall, thresholds = precision_recall_curve(positive, scores)
    result["targets"] = {}
    if target_precision is not None:
        ok = np.flatnonzero(precision[:-1] >= target_precision)
        result["targets"]["precision"] = _target(scores, positive, thresholds[ok.min()] if len(ok) else None,
                                                 target_precision)
    if target_recall is not None:
        ok = np.flatnonzero(recall[:-1] >= target_recall)
        result["targets"]["recall"] = _target(scores, positive, thresholds[ok.max()] if len(ok) else None,
                                              target_recall)
    if scored.rule_selected is not None:
        p, r = _precision_recall(scored.rule_selected, positive)
        result["rule"] = {"rule": scored.rule, "action": scored.rule_action,
                          "selected": float(scored.rule_selected.mean()), "precision": p, "recall": r}
    fpr, tpr, _ = roc_curve(positive, scores)
    result["curves"] = {"roc": (fpr, tpr), "pr": (recall, precision)}
    result["histograms"] = {"positive": scores[positive], "negative": scores[~positive]}
    return result


def _target(scores: np.ndarray, positive: np.ndarray, threshold: float | None, target: float) -> dict:
    if threshold is None:
        return {"target": target, "threshold": None}
    selected = scores >= threshold
    p, r = _precision_recall(selected, positive)
    return {"target": target, "threshold": float(threshold), "selected": float(selected.mean()),
            "precision": p, "recall": r}


def target_lines(result: dict) -> list[str]:
    """The targets and the stage's rule, one line each."""
    lines = []
    for what, t in result["targets"].items():
        if t["threshold"] is None:
            lines.append(f"no threshold reaches {what} {t['target']}")
        else:
            lines.append(f"{what} >= {t['target']}: threshold {t['threshold']:.4g} selects {t['selected']:.1%} "
                         f"(precision {t['precision']:.3f}, recall {t['recall']:.3f})")
    if "rule" in result:
        r = result["rule"]
        lines.append(f"the stage's rule ({r['rule']}) {r['action']} {r['selected']:.1%}: precision "
                     f"{r['precision']:.3f}, recall {r['recall']:.3f}")
    return lines


def page(result: dict) -> str:
    """The HTML page: headline figures, ROC and PR curves, score histograms per label, the tables."""
    from winnow.flows.report import curves_svg, histogram_svg, html_page, table_html

    lo, hi = result["roc_auc_ci"]
    plo, phi = result["pr_auc_ci"]
    scores = np.concatenate(list(result["histograms"].values()))
    span = (float(scores.min()), float(scores.max()))
    body = [f"<h1>winnow eval scorer</h1><p>{html.escape(result['scorer'])}: {result['documents']:,} labelled "
            f"documents, {result['positives']:,} positive</p>",
            f"<p>ROC AUC <b>{result['roc_auc']:.4f}</b> (95% interval {lo:.4f}-{hi:.4f}); PR AUC (average "
            f"precision) <b>{result['pr_auc']:.4f}</b> ({plo:.4f}-{phi:.4f})</p>",
            "".join(f"<p>{html.escape(line)}</p>" for line in target_lines(result)),
            curves_svg([("ROC", *result["curves"]["roc"])], "ROC curve", "false positive rate", "true positive rate",
                       diagonal=True),
            curves_svg([("precision-recall", *result["curves"]["pr"])], "precision-recall curve", "recall",
                       "precision"),
            histogram_svg(result["histograms"]["positive"], [], "scores of positive documents", span=span),
            histogram_svg(result["histograms"]["negative"], [], "scores of negative documents", span=span),
            "<h2>Thresholds</h2>",
            table_html(["score >=", "selected", "precision", "recall"], result["thresholds"], "thresholds"),
            "<h2>Top shares</h2>",
            table_html(["top share", "lowest score in it", "precision", "recall"], result["shares"], "shares"),
            "<h2>Calibration by score decile</h2>",
            table_html(["decile", "documents", "lowest score", "highest score", "mean score", "positive share"],
                       result["calibration"], "calibration")]
    return html_page("winnow eval scorer", body)
