"""The report: the plot says its units and how many images the PGD points cover; report.md
stays short."""

from __future__ import annotations

from tightlip.eval.report import certified_figure, report_config, write_report


def _metrics() -> dict:
    return {
        "method": "tightlip",
        "norm": "2",
        "clean_accuracy": 0.9,
        "lipschitz_upper": 2.0,
        "lipschitz_lower": 1.9,
        "tightness": 2.0 / 1.9,
        "certified_accuracy": {"global": {"0.3": 0.8}, "last_layer": {"0.3": 0.82}},
        "pgd_accuracy": {"0.3": 0.85},
        "train_seconds": 1.0,
        "n_test": 10000,
        "n_attacked": 1000,
        "radius_curve": {"radii": [0.0, 0.3], "global": [0.9, 0.8], "last_layer": [0.9, 0.82]},
        "config": {
            "model": {"widths": [8]},
            "origin": {"widths": "explicit"},
            "optimizer": {"param_groups": [{"lr": 0.1}]},
            "history": [{"epoch": 1}],
        },
    }


def test_plot_axis_and_legend() -> None:
    ax = certified_figure(_metrics()).axes[0]
    assert ax.get_xlabel() == "ℓ2 radius (input in [0, 1])"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "PGD (empirical, 1000 images)" in labels
    assert "certified (global)" in labels and "certified (last layer)" in labels


def test_report_leaves_optimizer_history_and_origin_out(tmp_path) -> None:
    assert report_config({"a": [{"history": 1, "b": 2}], "origin": {}}) == {"a": [{"b": 2}]}
    text = write_report(tmp_path, _metrics()).read_text()
    assert '"widths"' in text
    for word in ("param_groups", "optimizer", '"history"', '"origin"'):
        assert word not in text


def test_an_imported_network_shows_no_training_time() -> None:
    """Issue 21: "train seconds 0.0" was shown for imported models."""
    from tightlip.eval.report import results_rows

    metrics = {
        "method": "imported", "norm": "2", "clean_accuracy": 0.9, "lipschitz_upper": 2.0,
        "lipschitz_lower": 1.5, "tightness": 4 / 3, "certified_accuracy": {},
        "pgd_accuracy": {}, "train_seconds": 0.0,
    }
    labels = [label for label, _ in results_rows(metrics)]
    assert "train seconds" not in labels
    assert "train seconds" in [label for label, _ in results_rows({**metrics, "train_seconds": 3.0})]


def test_results_lead_with_the_best_certificate_and_name_the_bound() -> None:
    """Issue 21: two certificate rows and no headline; the table now leads with the best
    certificate per radius, names it and the radius units, and names the bound's method."""
    from tightlip.eval.report import results_rows

    metrics = {
        "method": "tightlip", "norm": "2", "clean_accuracy": 0.9, "lipschitz_upper": 1.0,
        "lipschitz_lower": 0.99, "tightness": 1.01, "pgd_accuracy": {}, "train_seconds": 1.0,
        "certified_accuracy": {"global": {"1.58": 0.60}, "last_layer": {"1.58": 0.62}},
        "certified_accuracy_best": {"1.58": 0.62},
        "upper_certificate": {"method": "trivial"},
    }
    labels = [label for label, _ in results_rows(metrics)]
    first = next(i for i, label in enumerate(labels) if label.startswith("certified @"))
    assert "best certificate (last_layer" in labels[first] and "input units" in labels[first]
    assert "Lipschitz upper (sound, trivial)" in labels
