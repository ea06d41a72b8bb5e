"""NannyML's CBPE on the runs of docs/decisions.md: a one-off comparison, run in its own venv
(nannyml is no dependency of probhook or its tests):

    python3 -m venv /tmp/nannyml-venv
    /tmp/nannyml-venv/bin/pip install nannyml statsmodels pyarrow
    /tmp/nannyml-venv/bin/python scripts/nannyml_compare.py RUNS_DIR [DEMO_RUN.parquet]

RUNS_DIR is what scripts/decisions_runs.py wrote. NannyML is fitted on the labelled reference
(its CBPE calibrates each class's probability on it, isotonic one-vs-rest, then renormalises) and
estimates the accuracy of the current week and of the demo run, one chunk each. Prints one JSON
object per run: NannyML's estimate, its band (``lower`` / ``upper``: NannyML's confidence
boundaries, estimate +- 3 sampling errors), the sampling error, and the classes NannyML chose to
calibrate (it calibrates a class only where its check on the reference says it needs it).
"""

import json
import sys
from pathlib import Path

import nannyml as nml
import pandas as pd

LABELS = ["letter", "invoice", "form", "memo"]


def frame(path, labels_csv=None):
    df = pd.read_parquet(path)
    probs = df[[f"p_{label}" for label in LABELS]].to_numpy()
    df["predicted"] = [LABELS[i] for i in probs.argmax(axis=1)]
    if labels_csv is not None:
        truth = pd.read_csv(labels_csv)
        if "key" in truth:
            df = df.merge(truth.rename(columns={"label": "y_true"}), on="key")
        else:
            df["doc"] = df["location"].map(lambda p: Path(p).name)
            truth = truth.rename(columns={"file_name": "doc", "label": "y_true"})
            df = df.merge(truth, on=["doc", "page_number"])
    return df


def main():
    runs = Path(sys.argv[1])
    reference = frame(runs / "reference.parquet", runs / "reference-labels.csv")
    estimator = nml.CBPE(
        y_pred_proba={label: f"p_{label}" for label in LABELS},
        y_pred="predicted",
        y_true="y_true",
        problem_type="classification_multiclass",
        metrics=["accuracy"],
        chunk_number=1,
    )
    estimator.fit(reference)
    calibrated = sorted(  # classes whose probabilities NannyML found it must calibrate
        c for c, cal in estimator._calibrators.items() if type(cal).__name__ != "NoopCalibrator"
    )
    analyses = {"current week": runs / "current.parquet"}
    if len(sys.argv) > 2:
        analyses["demo run"] = Path(sys.argv[2])
    for name, path in analyses.items():
        result = estimator.estimate(frame(path)).filter(period="analysis").to_df()
        acc = result["accuracy"].iloc[0]
        print(json.dumps({"run": name, "nannyml": nml.__version__, "estimate": acc["value"],
                          "lower": acc["lower_confidence_boundary"],
                          "upper": acc["upper_confidence_boundary"],
                          "sampling_error": acc["sampling_error"],
                          "calibrated_classes": calibrated}))  # fmt: skip


if __name__ == "__main__":
    main()
