"""The report of an evaluation (:mod:`cgcnn.evaluate`): a Markdown table and a parity plot.

:func:`format_table` writes ``metrics.md``; :func:`parity_figure` draws ``parity.png``,
held-out κ_L against target on log axes, with the prediction intervals of the best
method; :func:`write_report` writes both with the predictions table, all renamed
together (:class:`cgcnn.outputs.files.OutputSet`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cgcnn import InputError

__all__ = ["METRICS", "BASELINES", "best_method", "format_table", "parity_figure", "write_report", "label"]

BASELINES = ("constant", "source")
METRICS = {  # column: heading in metrics.md
    "mae": "MAE (log10)",
    "rmse": "RMSE (log10)",
    "r2": "R² (log10)",
    "spearman": "Spearman ρ",
    "mape": "MAPE %",
}
_LABELS = {
    "constant": "constant (train median)",
    "source": "source model (no transfer)",
    "original": "original route (MLP on crys_fea)",
    "finetune": "fine-tuned source network",
    "auto": "recommended route (auto)",
}


def label(method: str) -> str:
    """A reader's name of a method (``K+bte``: ``K``'s with the BTE value)."""
    if method.endswith("+bte"):
        return f"{label(method[:-4])} with the BTE value"
    return _LABELS.get(method, f"{method} last layer")


def best_method(table: pd.DataFrame) -> str | None:
    """The method other than the baselines with the lowest mean MAE (None if there is none)."""
    rest = table.drop(index=[m for m in BASELINES if m in table.index])
    return None if rest.empty else str(rest["mae"].idxmin())


def format_table(table: pd.DataFrame) -> str:
    """``table`` (:func:`cgcnn.evaluate.summarize`) as Markdown.

    A header line (folder, n, protocol, sources, descriptors), the accuracy table (mean ± std
    over splits), then, for the methods that have intervals, their held-out coverage and mean
    width and the MAE of crystals in and out of the applicability domain (pooled over splits); with BTE
    values (``table.attrs["bte"]``, :func:`cgcnn.evaluate.evaluate`), which crystals have one and every
    method's MAE on those alone beside the raw BTE values'.
    """
    a = table.attrs
    header = (f"Transfer evaluation of `{a.get('folder', '?')}` ({a.get('n', '?')} crystals): "
              f"{a.get('protocol', '')}; source model(s): {', '.join(a.get('sources', []))}; "
              f"descriptors: {a.get('descriptors', 'none')}. "
              "Held-out metrics, mean ± std over splits; κ_L in W m⁻¹ K⁻¹.")
    bte = a.get("bte")
    if bte:
        mode = {"stack": "stacked calibration a·plain + b·log10 κ_BTE + c",
                "descriptor": "log10 κ_BTE as one more descriptor"}.get(bte.get("mode"), bte.get("mode"))
        header += (f" BTE values ({bte['source']}; +bte rows: {mode}): {bte['n_with']} of {a.get('n', '?')} "
                   f"crystals have one; the others ({bte['without']}) get the plain method's prediction in the "
                   "+bte rows.")
    lines = [header, "", "| method | " + " | ".join(METRICS.values()) + " |", "|---|" + "---:|" * len(METRICS)]
    for method, row in table.iterrows():
        cells = []
        for key in METRICS:
            digits = 1 if key == "mape" else 3
            mean, std = row[key], row[f"{key}_std"]
            cells.append("n/a" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    with_iv = table[table["coverage"].notna()] if "coverage" in table else table.iloc[:0]
    if len(with_iv):
        level = a.get("level", 0.9)
        lines += ["", f"Prediction intervals ({level:.0%}, CV+ fit on each training part) and applicability "
                  "domain (held-out crystals pooled over splits):", "",
                  "| method | coverage % | mean width (log10) | MAE in domain (n) | MAE out of domain (n) |",
                  "|---|---:|---:|---:|---:|"]
        for method, row in with_iv.iterrows():
            out = "n/a" if not row["n_out"] else f"{row['mae_out']:.3f} ({int(row['n_out'])})"
            lines.append(f"| {method} | {100 * row['coverage']:.1f} | {row['width']:.3f} | "
                         f"{row['mae_in']:.3f} ({int(row['n_in'])}) | {out} |")
    if bte and len(bte["subset"]):
        lines += ["", f"The {bte['n_with']} crystals with a BTE value alone (held-out MAE, mean ± std over splits; "
                  "raw BTE: the values themselves):", "", "| method | MAE (log10) | predictions |", "|---|---:|---:|"]
        for method, row in bte["subset"].iterrows():
            lines.append(f"| {method} | {row['mae']:.3f} ± {row['mae_std']:.3f} | {int(row['n'])} |")
    return "\n".join(lines) + "\n"


def parity_figure(table: pd.DataFrame, predictions: pd.DataFrame):
    """A log-log parity plot of κ_L: held-out points of the recommended route (``auto``) when it was
    evaluated, else of the method of lowest MAE, with their prediction intervals when it has them
    (crystals out of domain drawn hollow), and of the source model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 6.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    best = "auto" if "auto" in table.index else best_method(table)
    lo, hi = np.inf, -np.inf
    if "source" in table.index:
        part = predictions[predictions["method"] == "source"]
        kt, kp = 10.0 ** part["target"].to_numpy(), 10.0 ** part["prediction"].to_numpy()
        lo, hi = min(lo, kt.min(), kp.min()), max(hi, kt.max(), kp.max())
        row = table.loc["source"]
        ax.scatter(kt, kp, marker="x", color="tab:gray", alpha=0.6, s=18,
                   label=f"{label('source')}: MAE {row['mae']:.3f}, R² {row['r2']:.2f}")
    if best is not None:
        part = predictions[predictions["method"] == best]
        kt, kp = 10.0 ** part["target"].to_numpy(), 10.0 ** part["prediction"].to_numpy()
        lo, hi = min(lo, kt.min(), kp.min()), max(hi, kt.max(), kp.max())
        row = table.loc[best]
        text = f"{label(best)}: MAE {row['mae']:.3f}, R² {row['r2']:.2f}"
        if "low" in part and part["low"].notna().any():
            klo, khi = 10.0 ** part["low"].to_numpy(), 10.0 ** part["high"].to_numpy()
            ax.errorbar(kt, kp, yerr=[kp - klo, khi - kp], fmt="none", ecolor="tab:blue", alpha=0.18, lw=0.8)
            text += f"; {table.attrs.get('level', 0.9):.0%} intervals cover {100 * row['coverage']:.0f}%"
        inside = part["in_domain"].to_numpy(bool) if "in_domain" in part else np.ones(len(part), bool)
        ax.scatter(kt[inside], kp[inside], marker="o", color="tab:blue", alpha=0.6, s=16, edgecolors="none",
                   label=text)
        if (~inside).any():
            ax.scatter(kt[~inside], kp[~inside], marker="o", facecolors="none", edgecolors="tab:red", s=22,
                       label="out of the applicability domain")
    lo, hi = lo / 1.3, hi * 1.3
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = x")
    ax.plot([lo, hi], [2 * lo, 2 * hi], color="black", lw=0.6, ls=":", label="factor of 2")
    ax.plot([lo, hi], [lo / 2, hi / 2], color="black", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_box_aspect(1)
    ax.set_xlabel(r"target $\kappa_\mathrm{L}$ (W m$^{-1}$ K$^{-1}$)")
    ax.set_ylabel(r"predicted $\kappa_\mathrm{L}$ (W m$^{-1}$ K$^{-1}$)")
    n_splits = int(table["n_splits"].max())
    shown = best if best is not None else "source"
    row = table.loc[shown]
    ax.set_title(f"{table.attrs.get('folder', '')}, held-out over {n_splits} splits\n"
                 f"{label(shown)}: MAE {row['mae']:.3f} log10, R² {row['r2']:.2f} (mean over splits)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    return fig


def write_report(table: pd.DataFrame, predictions: pd.DataFrame, out_dir, inputs=()) -> dict:
    """Write ``metrics.md``, ``predictions.csv`` and ``parity.png`` into ``out_dir`` (created),
    renamed together at the end.

    Returns a dict of the three paths.

    Raises
    ------
    InputError
        If the folder cannot be made or a file cannot be written, or an output is an input.
    """
    from cgcnn.outputs import OutputSet, check_output_dir

    out = check_output_dir(out_dir)
    paths = {"metrics": out / "metrics.md", "predictions": out / "predictions.csv", "parity": out / "parity.png"}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    outs = OutputSet({name: path for name, path in paths.items()}, inputs=inputs)
    with outs:
        outs.write_text(paths["metrics"], format_table(table))
        outs.write_csv(paths["predictions"], predictions, float_format="%.6g")
        outs.save(paths["parity"], parity_figure(table, predictions),
                  saver=lambda fig, f: fig.savefig(f, format="png", bbox_inches="tight", pad_inches=0.1))
    return paths

