"""The refinement's evidence and report: the refined best against the Taguchi optimum.

Why a module of its own: :mod:`doe_sr.workflow.refine` runs the trials; this reads them
back (Optuna for the trials, MLflow for each run's val/test scores and per-image test
PSNR) and says what the refinement found, with the same standard of evidence as the
array's report: the refined best is set side by side with the predicted, the measured
and (after ``doe-sr confirm``) the confirmed Taguchi optimum, and a paired test on the
test images says whether the gain is more than the images' scatter. The best trial is
chosen on the validation response and judged on the test split, never on the images it
was chosen on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from doe_sr.engine.bayes import OPTIMUM

__all__ = ["summarise", "write_refine_report"]

CAPTIONS = {
    "refine_comparison": "The refined best against the Taguchi optimum (predicted, measured, confirmed)",
    "refine_paired": "Paired tests on the test images (PSNR-Y, dB): the refined best against the Taguchi optimum",
    "refine_importance": "Importance of each setting: Optuna's fANOVA over every completed trial and the "
                         "array's ANOVA contribution",
    "refine_trials": "Every trial: the array's runs (warm start) and the refinement's",
}


def _scores(engine, run_ids: list[str], metric: str) -> tuple[float, float, dict[str, float]]:
    """Mean response and test PSNR of ``run_ids``, and each test image's PSNR-Y averaged over them."""
    vals, tests, per_image = [], [], []
    for rid in run_ids:
        rec = engine.tracker.run(rid)
        vals.append(rec.metrics.get(metric, math.nan))
        tests.append(rec.metrics.get("test_psnr", math.nan))
        frame = engine.tracker.per_image(rid)
        if frame is not None and "psnr_y" in frame:
            per_image.append(frame.set_index("name")["psnr_y"])
    images = pd.concat(per_image, axis=1).mean(axis=1).to_dict() if per_image else {}
    mean = (lambda xs: float(pd.Series(xs, dtype=float).mean()) if xs else math.nan)
    return mean(vals), mean(tests), {str(k): float(v) for k, v in images.items()}


def _levels(params: dict) -> str:
    return ", ".join(f"{k}={(f'{v:.4g}' if isinstance(v, float) else v)}" for k, v in params.items())


def summarise(engine, ref, analysis, outcome) -> None:
    """Fill ``outcome`` (a :class:`doe_sr.workflow.refine.Refined`): trials, best, comparison, paired tests,
    importances."""
    from doe_sr.analysis.paired import paired_test
    from doe_sr.engine.bayes import importances
    from doe_sr.workflow.confirm import finished_confirmations

    study = engine.study
    metric = study.response.metric
    maximize = study.response.objective != "smaller"
    trials = ref.queue.sampled_trials()
    outcome.trials, outcome.paired = trials, []  # read afresh: summarise runs again after --confirm
    fixed = ref.campaign.search.fixed
    mine = [t for t in trials if not t["warm"] and t["state"] == "complete" and t["value"] is not None]
    if not mine:
        outcome.notes.append("no refinement trial completed (all pruned or failed): nothing to compare")
        return
    best = (max if maximize else min)(mine, key=lambda t: t["value"])
    outcome.best = {"trial": int(best["attrs"].get("run", 0)), "optuna_number": best["number"],
                    "value": best["value"], "params": {**fixed, **best["params"]},
                    "mlflow_run_id": best["attrs"].get("mlflow_run_id", ""),
                    "is_taguchi_optimum": bool(best["attrs"].get(OPTIMUM))}
    rows, images = [], {}
    p = analysis.predicted
    optimum_levels = ", ".join(f"{f}={lvl}" for f, lvl in analysis.optimum.items())
    rows.append({"setting": "Taguchi optimum (predicted)", "levels": optimum_levels, metric: p.mean,
                 "ci95 low": p.ci95[0] if p.ci95 else math.nan, "ci95 high": p.ci95[1] if p.ci95 else math.nan,
                 "test_psnr": math.nan, "runs": 0, "source": "the array's additive model"})
    # measured: the refinement's trial of the optimum, or the array's replicate-0 run at the optimum
    measured = [t for t in trials if t["attrs"].get(OPTIMUM) and t["state"] == "complete"]
    if measured:
        attrs = measured[0]["attrs"]
        ids, source = [attrs.get("mlflow_run_id", "")], f"refinement trial {attrs.get('run')}"
    else:
        codes = {f: study.factor(f).level_labels.index(analysis.optimum[f]) for f in study.factor_names}
        rows_at = [r.run for r in engine.runs.values() if r.codes == codes]
        ids = [s.mlflow_run_id for s in engine.progress().states
               if rows_at and s.run == rows_at[0] and s.replicate == 0 and s.mlflow_run_id]
        source = f"array run {rows_at[0]} (replicate 0)" if rows_at else ""
    if ids and ids[0]:
        val, test, images["measured"] = _scores(engine, ids, metric)
        rows.append({"setting": "Taguchi optimum (measured)", "levels": optimum_levels, metric: val,
                     "ci95 low": math.nan, "ci95 high": math.nan, "test_psnr": test, "runs": 1, "source": source})
    confirmations = finished_confirmations(engine, analysis.optimum, metric)
    if confirmations:
        outcome.confirmed = [float(c.value) for c in confirmations]
        val, test, images["confirmed"] = _scores(engine, [c.run_id for c in confirmations], metric)
        rows.append({"setting": "Taguchi optimum (confirmed)", "levels": optimum_levels, metric: val,
                     "ci95 low": math.nan, "ci95 high": math.nan, "test_psnr": test, "runs": len(confirmations),
                     "source": "doe-sr confirm (fresh seeds)"})
    elif (note := "the Taguchi optimum is not confirmed yet (`doe-sr confirm`); the comparison uses its measured "
                  "run") not in outcome.notes:
        outcome.notes.append(note)
    val, test, images["best"] = _scores(engine, [outcome.best["mlflow_run_id"]], metric)
    rows.append({"setting": "Refined best", "levels": _levels(outcome.best["params"]), metric: val,
                 "ci95 low": math.nan, "ci95 high": math.nan, "test_psnr": test, "runs": 1,
                 "source": f"refinement trial {outcome.best['trial']} (chosen on {metric})"})
    from doe_sr.workflow.refine import refined_confirmations

    again = [r for r in refined_confirmations(ref, outcome.best) if metric in r.metrics]
    outcome.refined_confirmed = [float(r.metrics[metric]) for r in again]
    if again:
        val, test, images["best_confirmed"] = _scores(engine, [r.run_id for r in again], metric)
        rows.append({"setting": "Refined best (confirmed)", "levels": _levels(outcome.best["params"]), metric: val,
                     "ci95 low": math.nan, "ci95 high": math.nan, "test_psnr": test, "runs": len(again),
                     "source": "doe-sr refine --confirm (fresh seeds)"})
    outcome.comparison = pd.DataFrame(rows)
    if images.get("best_confirmed") and images.get("confirmed"):
        outcome.paired.append(paired_test(images["best_confirmed"], images["confirmed"],
                                          a_name="refined best (confirmed)", b_name="Taguchi optimum (confirmed)"))
    for key, label in (("measured", "Taguchi optimum (measured)"), ("confirmed", "Taguchi optimum (confirmed)")):
        if key == "measured" and outcome.best["is_taguchi_optimum"]:
            continue  # the best trial is the optimum's own run: nothing to test
        if images.get(key) and images.get("best"):
            outcome.paired.append(paired_test(images["best"], images[key], a_name="refined best", b_name=label))
    fanova = importances(ref.queue.optuna_study, [n for n in ref.campaign.search.space])
    judged = analysis.judged_anova
    contrib = {str(r["source"]): float(r["contribution_pct"]) for _, r in judged.iterrows()
               if "contribution_pct" in judged.columns}
    names = list(study.factor_names) + [n for n in ref.campaign.search.space if n not in study.factor_names]
    outcome.importance = pd.DataFrame([{"factor": n, "fanova_pct": fanova.get(n, math.nan),
                                        "taguchi_pct": contrib.get(n, math.nan), "held": n in fixed} for n in names])


def _trials_table(outcome, metric: str) -> pd.DataFrame:
    rows = []
    for t in outcome.trials:
        a = t["attrs"]
        rows.append({"optuna trial": t["number"],
                     "role": "array (warm start)" if t["warm"] else ("refine: Taguchi optimum" if a.get(OPTIMUM)
                                                                     else "refine"),
                     "run": a.get("run"), "replicate": a.get("replicate"), "state": t["state"],
                     metric: t["value"], **{k: v for k, v in t["params"].items()},
                     "pruned": a.get("pruned", ""), "mlflow_run_id": a.get("mlflow_run_id", "")})
    return pd.DataFrame(rows)


def folder_name(ref) -> str:
    """``refine`` (or ``refine_<name>`` for a named refinement): the report's folder under the study's."""
    key = ref.campaign.tags.get("doe_sr.refine", "refine")
    return "refine" if key == "refine" else f"refine_{key}"


def write_refine_report(engine, ref, analysis, outcome, out: Path) -> None:
    """Tables, figures, ``refine.md`` and ``refine.json`` in ``out/<study>/refine/``, filed with the parent run."""
    from doe_sr.analysis.paired import paired_tests_table
    from doe_sr.report import refine_figures as figs
    from doe_sr.report.writer import make_folder, write_table

    study = engine.study
    metric = study.response.metric
    folder = make_folder(out / study.name / folder_name(ref))
    files: list[Path] = []
    tables = {"refine_trials": _trials_table(outcome, metric)}
    if outcome.comparison is not None:
        tables["refine_comparison"] = outcome.comparison
    if outcome.paired:
        tables["refine_paired"] = paired_tests_table(outcome.paired)
    if outcome.importance is not None:
        tables["refine_importance"] = outcome.importance
    for name, table in tables.items():
        files += write_table(table, folder, name, caption=CAPTIONS[name], index=False)
    ost = ref.queue.optuna_study
    searched = list(ref.campaign.search.space)
    reference = {"Taguchi optimum (predicted)": analysis.predicted.mean}
    parent = engine.tracker.find_parent(study.name)
    baseline = engine.tracker.run(parent).metrics.get(f"bicubic_{metric}") if parent else None
    if baseline is not None:
        reference["bicubic"] = baseline
    files += figs.optimization_history(ost, folder / "refine_history", metric=metric, reference=reference)
    files += figs.slice_plot(ost, folder / "refine_slice", searched, metric=metric)
    ranked = searched
    if outcome.importance is not None:
        imp = outcome.importance.set_index("factor")["fanova_pct"].to_dict()
        ranked = sorted(searched, key=lambda n: -(imp.get(n) if imp.get(n) == imp.get(n) else -1))
    files += figs.contour_plot(ost, folder / "refine_contour", ranked[:3], metric=metric)
    if outcome.importance is not None:
        files += figs.importance_comparison(outcome.importance, folder / "refine_importance")
    files += [folder / "refine.md", folder / "refine.json"]
    outcome.folder, outcome.files = folder, files
    (folder / "refine.md").write_text(markdown(outcome, metric, tables))
    (folder / "refine.json").write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
    try:
        if parent is not None:
            for path in files:
                if path.exists():
                    engine.tracker.log_artifact(parent, path, folder_name(ref))
            if outcome.best is not None:
                engine.tracker.log_metrics(parent, {f"refine.best_{metric}": float(outcome.best["value"])})
                engine.tracker.set_tags(parent, {f"doe_sr.refine.best.{k}": (f"{v:.4g}" if isinstance(v, float) else v)
                                                 for k, v in outcome.best["params"].items()})
    except Exception as exc:  # the report stands; the copy in MLflow is a convenience
        outcome.warnings.append(f"the refinement report was not filed with the parent run: {exc}")


def verdict(outcome) -> str:
    """One paragraph: what the refinement found, on the evidence of the paired test."""
    if outcome.best is None:
        return "No refinement trial completed, so the refinement found nothing to compare."
    b = outcome.best
    if b.get("is_taguchi_optimum"):
        return (f"No refinement trial beat the Taguchi optimum: the best trial is trial {b['trial']}, which measures "
                f"the optimum itself ({_levels(b['params'])}; {b['value']:.4f} on the validation response).")
    tried = sum(1 for t in outcome.trials if not t["warm"] and t["state"] == "complete")
    text = (f"The refined best (trial {b['trial']}: {_levels(b['params'])}) reaches {b['value']:.4f} on the "
            f"validation response, as the best of {tried} completed trials on those images with one seed")
    if len(outcome.confirmed) >= 2 and not outcome.refined_confirmed:
        lo, hi = min(outcome.confirmed), max(outcome.confirmed)
        lead = abs(b["value"] - sum(outcome.confirmed) / len(outcome.confirmed))
        text += (f"; seeds alone move the Taguchi optimum from {lo:.4f} to {hi:.4f} (its {len(outcome.confirmed)} "
                 f"confirmation runs), and the refined best lies {lead:.4f} from their mean, "
                 + ("within" if lead <= hi - lo else "beyond") + " that scatter")
    if outcome.refined_confirmed and outcome.confirmed:
        r, c = outcome.refined_confirmed, outcome.confirmed
        text += (f". Over fresh seeds the refined best averages {sum(r) / len(r):.4f} ({len(r)} runs, {min(r):.4f} to "
                 f"{max(r):.4f}) against the Taguchi optimum's {sum(c) / len(c):.4f} ({len(c)} runs, {min(c):.4f} to "
                 f"{max(c):.4f})" + (": the two ranges do not overlap." if min(r) > max(c) or max(r) < min(c)
                                     else ": the ranges overlap, so seeds alone could explain the difference."))
    else:
        text += (". Train it with fresh seeds (`doe-sr refine --confirm`, and `doe-sr confirm` for the Taguchi "
                 "optimum) before calling it better than the Taguchi optimum.")
    for t in outcome.paired:
        pair = f"{t.a[0].upper() + t.a[1:]} against the {t.b}"
        if t.significant is None:
            text += (f" {pair}: {t.mean_diff:+.4f} dB of test PSNR-Y, {t.verdict} (too few test images for a "
                     "paired test).")
        elif t.significant:
            text += (f" {pair}: {t.mean_diff:+.4f} dB of test PSNR-Y (95% CI {t.ci95[0]:+.4f} to {t.ci95[1]:+.4f}; "
                     f"t p = {t.t_p:.3g}, Wilcoxon p = {t.wilcoxon_p:.3g}): {t.verdict}.")
        else:
            text += (f" {pair}: {t.mean_diff:+.4f} dB of test PSNR-Y (95% CI {t.ci95[0]:+.4f} to {t.ci95[1]:+.4f}), "
                     "not significant: no gain beyond the images' scatter.")
    return text


def markdown(outcome, metric: str, tables: dict[str, pd.DataFrame]) -> str:
    from doe_sr.report.writer import to_markdown

    p = outcome.progress
    held = ", ".join(f"{f}={v}" for f, v in outcome.held.items()) or "none"
    parts = [f"# Refinement of the Taguchi optimum ({outcome.name})", "", verdict(outcome), "",
             f"Trials: {p.total} ({p.done} complete, {p.count('pruned')} pruned, {p.count('failed')} failed); "
             f"warm start: {outcome.warm_start['added']} array runs"
             + (f" ({outcome.warm_start['left_out']} outside the space left out)" if outcome.warm_start["left_out"]
                else "") + f". Searched: {', '.join(outcome.searched)}. Held at the Taguchi optimum: {held}.", ""]
    for name, title in (("refine_comparison", "Refined best against the Taguchi optimum"),
                        ("refine_paired", "Paired tests (test images)"),
                        ("refine_importance", "Importance: fANOVA against the array's ANOVA")):
        if name in tables:
            parts += [f"## {title}", "", to_markdown(tables[name], index=False, digits=4), ""]
    parts += ["## Figures", "", "![optimisation history](refine_history.svg)", "",
              "![importance](refine_importance.svg)", "", "![slice](refine_slice.svg)", "",
              "![contour](refine_contour.svg)", "", "Every trial: `refine_trials.csv`.", ""]
    if outcome.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in outcome.notes], ""]
    return "\n".join(parts)
