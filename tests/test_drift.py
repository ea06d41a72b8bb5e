"""Drift between runs: KS and chi-square equal scipy.stats on the same data, PSI equals its
definition, the grid's KS bounds hold, and runs come from captures, loaded files, files and
folders; bad input (other labels, empty runs, NaN rows) is named."""

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats
import torch

import probhook
from probhook import capture_probs, scan
from probhook.drift import compare
from probhook.run_stats import RunStats
from probhook.two_sample import (
    FINE_BINS,
    PSI_EPSILON,
    chi_square,
    fine_histogram,
    ks_binned,
    ks_exact,
    psi,
)

LABELS = ["letter", "invoice", "form", "memo"]


def run(seed, n, scale=2.0, shift=0.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * scale
    z[:, 1] += shift
    return (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize(("n1", "n2"), [(300, 450), (9000, 10_000), (25_000, 14_000)])
def test_ks_equals_scipy_on_the_same_values(n1, n2):
    """Both of scipy's branches: the exact p-value up to 10,000 values, the asymptotic one above."""
    a, b = run(1, n1), run(2, n2, scale=1.7, shift=0.3)
    drift = compare(a, b)
    for score, values in (("confidence", lambda p: p.max(axis=1)),
                          ("entropy", lambda p: _entropy32(p))):  # fmt: skip
        expected = scipy.stats.ks_2samp(values(a), values(b))
        got = getattr(drift, score).ks
        assert got.exact
        assert got.statistic == expected.statistic
        assert got.pvalue == expected.pvalue
    for k, shift in enumerate(drift.per_class):  # per predicted class too
        mask_a, mask_b = a.argmax(axis=1) == k, b.argmax(axis=1) == k
        expected = scipy.stats.ks_2samp(a[mask_a].max(axis=1), b[mask_b].max(axis=1))
        assert shift.confidence.ks.statistic == expected.statistic
        assert shift.confidence.ks.pvalue == expected.pvalue


def _entropy32(p):
    """Normalised entropy as kept for exact KS: computed in float64, stored as float32."""
    q = p.astype(np.float64)
    h = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1) / np.log(q.shape[1])
    return h.astype(np.float32)


def test_ks_of_ties_and_of_a_direct_call_equal_scipy():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 20, 30_000) / 20  # many ties
    b = rng.integers(0, 22, 12_000) / 22
    expected = scipy.stats.ks_2samp(a, b)
    got = ks_exact(a, b, block=1000)  # several blocks
    assert (got.statistic, got.pvalue) == (expected.statistic, expected.pvalue)


def test_chi_square_equals_scipy_chi2_contingency():
    a, b = run(3, 2000), run(4, 1500, shift=0.4)
    drift = compare(a, b)
    table = np.vstack(
        [np.bincount(a.argmax(1), minlength=4), np.bincount(b.argmax(1), minlength=4)]
    )
    expected = scipy.stats.chi2_contingency(table)
    c = drift.class_shares
    assert (c.statistic, c.pvalue, c.dof) == (expected.statistic, expected.pvalue, expected.dof)
    # two classes: scipy's default Yates correction, as scipy applies it
    two = chi_square([40, 60], [55, 45])
    yates = scipy.stats.chi2_contingency([[40, 60], [55, 45]])
    assert (two.statistic, two.pvalue, two.dof) == (yates.statistic, yates.pvalue, 1)
    # a class neither run predicts is left out (scipy refuses zero expected counts)
    gap = chi_square([10, 0, 30, 5], [12, 0, 20, 9])
    assert gap.classes == (0, 2, 3)
    expected = scipy.stats.chi2_contingency([[10, 30, 5], [12, 20, 9]])
    assert (gap.statistic, gap.pvalue) == (expected.statistic, expected.pvalue)
    one = chi_square([10, 0], [4, 0])
    assert (one.statistic, one.pvalue, one.dof) == (0.0, 1.0, 0)


def test_psi_equals_its_definition_on_the_reference_deciles():
    a, b = run(6, 5000), run(7, 4000, scale=1.5)
    x, y = a.max(axis=1).astype(np.float64), b.max(axis=1).astype(np.float64)
    result = compare(a, b).confidence.psi
    edges = np.array(result.edges)
    # the definition, computed here from the values: bins [edge_i, edge_i+1), shares, epsilon
    bins = np.r_[-np.inf, edges, np.inf]
    e = np.array([((x >= lo) & (x < hi)).sum() for lo, hi in itertools.pairwise(bins)]) / len(x)
    q = np.array([((y >= lo) & (y < hi)).sum() for lo, hi in itertools.pairwise(bins)]) / len(y)
    e, q = np.where(e == 0, PSI_EPSILON, e), np.where(q == 0, PSI_EPSILON, q)
    assert result.psi == pytest.approx(((q - e) * np.log(q / e)).sum(), rel=1e-12)
    assert len(edges) == 9  # deciles of the reference: about a tenth of its rows in each bin
    np.testing.assert_allclose(result.reference, 0.1, atol=0.01)
    assert np.all(edges * FINE_BINS == np.round(edges * FINE_BINS))  # on the grid
    # an empty bin counts as epsilon
    empty = psi(fine_histogram([0.3, 0.5, 0.7, 0.9]), fine_histogram([0.95, 0.96]), n_bins=4)
    assert empty.current[:3] == (0.0, 0.0, 0.0)
    e, q = np.array(empty.reference), np.array([PSI_EPSILON] * 3 + [1.0])
    assert empty.psi == pytest.approx(((q - e) * np.log(q / e)).sum())


def test_ks_from_the_grid_brackets_the_exact_statistic():
    for seed in range(20):
        a, b = run(seed, 3000), run(seed + 100, 2500, scale=1.8)
        x, y = a.max(axis=1), b.max(axis=1)
        exact = ks_exact(x, y).statistic  # scipy's exact branch rounds it to h / lcm(n1, n2)
        grid = ks_binned(fine_histogram(x), fine_histogram(y))
        assert not grid.exact
        assert grid.statistic - 1e-12 <= exact <= grid.statistic_upper + 1e-12
        assert grid.statistic_upper - grid.statistic < 0.01
        assert grid.pvalue_lower <= grid.pvalue
    drift = compare(a, b, exact_rows=1000)  # more rows than kept: the grid path
    assert not drift.confidence.ks.exact
    ks = drift.confidence.ks
    assert ks.statistic - 1e-12 <= exact <= ks.statistic_upper + 1e-12


def test_compare_reads_captures_loaded_files_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "CHUNK_ROWS", 100)
    a, b = run(8, 700), run(9, 500, shift=0.5)
    caps = []
    for name, p in (("reference", a), ("current", b)):
        model = torch.nn.Identity()
        with capture_probs(model, labels=LABELS, activation="none", capacity=50,
                           sink=tmp_path / f"{name}.arrows") as cap:  # fmt: skip
            for start in range(0, len(p), 64):  # the ring keeps 50; the file keeps all
                model(torch.as_tensor(p[start : start + 64]))
        caps.append(cap)
    expected = compare(a, b)
    folder = tmp_path / "ray-like"
    folder.mkdir()
    table = probhook.load(tmp_path / "current.arrows").to_arrow()
    status = pa.array(["ok"] * len(table), pa.string())
    pq.write_table(table.slice(0, 300).append_column("status", status[:300]),
                   folder / "part-0.parquet")  # fmt: skip
    failed = table.slice(300).append_column("status", pa.array(["broken"] * 200, pa.string()))
    pq.write_table(failed.slice(0, 50), folder / "part-1.parquet")  # not classified: left out
    pq.write_table(
        table.slice(300).append_column("status", status[300:]), folder / "part-2.parquet"
    )
    sources = [
        (tmp_path / "reference.arrows", tmp_path / "current.arrows"),
        (probhook.load(tmp_path / "reference.arrows"), folder),
        (str(tmp_path / "reference.arrows"), probhook.load(folder)),
    ]
    for reference, current in sources:
        got = compare(reference, current)
        assert (got.reference.n, got.current.n) == (700, 500)
        assert got.confidence.ks.statistic == expected.confidence.ks.statistic
        assert got.class_shares.pvalue == pytest.approx(expected.class_shares.pvalue)
    assert compare(caps[0], caps[1]).current.n == 50  # a capture: the rows it keeps


def test_other_labels_empty_runs_and_nan_rows_are_named():
    a = run(10, 200)
    with pytest.raises(ValueError, match=r"has labels \['0', '1', '2', '3'\], the current run "
                       r"\['0', '1', '2'\] \(only in the reference: \['3'\]"):  # fmt: skip
        compare(a, a[:, :3])
    reordered = scan.open_rows(a)
    reordered = scan.Rows("x", ("1", "0", "2", "3"), (), "x", reordered._read)
    with pytest.raises(ValueError, match="the same labels in another column order"):
        compare(a, reordered)
    with pytest.raises(ValueError, match="the current run has no rows to compare"):
        compare(a, np.zeros((0, 4)))
    nan = a.copy()
    nan[:7] = np.nan
    with pytest.raises(ValueError, match=r"reference run has no rows .* \(200 rows with NaN"):
        compare(np.full((200, 4), np.nan), a)
    drift = compare(nan, a)
    assert (drift.reference.n, drift.reference.excluded) == (193, 7)
    frame = drift.to_pandas()
    row = frame[frame.measure == "excluded rows (not finite)"].iloc[0]
    assert (row.reference, row.current) == (7, 0)


def test_result_table_plot_and_text():
    drift = compare(run(11, 1500), run(12, 1500, scale=1.2, shift=1.0))
    frame = drift.to_pandas()
    assert {"measure", "class", "reference", "current", "statistic", "p_value"} <= set(frame)
    chi = frame[(frame.measure == "class share") & (frame["class"] == "(all)")].iloc[0]
    assert chi.test == "chi-square"
    assert chi.p_value == drift.class_shares.pvalue
    shares = frame[(frame.measure == "class share") & (frame["class"] != "(all)")]
    assert shares.reference.sum() == pytest.approx(1.0)
    assert len(shares) == 4
    acc = frame[frame.measure == "estimated accuracy"].iloc[0]
    assert acc.current_lower < acc.current < acc.current_upper
    fig = drift.plot()
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "class shares"
    assert "chi-square" in str(drift)
    assert "KS" in str(drift)
    assert drift.class_shares.pvalue < 1e-10  # the shift moved rows to "invoice"


def test_run_stats_counts_every_row_once_in_its_class():
    p = run(13, 1000)
    stats = RunStats(LABELS)
    for start in range(0, 1000, 300):
        stats.update(p[start : start + 300])
    assert stats.class_counts.tolist() == np.bincount(p.argmax(1), minlength=4).tolist()
    assert stats.histogram("confidence").sum() == 1000
    assert stats.mean("confidence") == pytest.approx(p.max(axis=1).mean(), rel=1e-6)
    np.testing.assert_array_equal(np.sort(stats.values("confidence", 2)),
                                  np.sort(p[p.argmax(1) == 2].max(axis=1)))  # fmt: skip
