"""Charts: the training curve from curve.csv and grouped bars with intervals."""

from __future__ import annotations

from pathlib import Path

from trace_core.plots import Series, grouped_bars, read_curve, training_curve

CURVE = (
    "step,loss,loss_gen,loss_ret,loss_route,learning_rate,samples_per_s,val_r5\n"
    "0,,,,,,,0.3\n5,9.6,7.0,2.0,6.1,1e-4,20,\n10,7.2,6.3,1.8,4.1,1e-4,21,0.5\n"
)


def test_read_curve_skips_empty_cells() -> None:
    series = read_curve(CURVE)
    assert series["val_r5"] == [(0.0, 0.3), (10.0, 0.5)]
    assert series["loss"] == [(5.0, 9.6), (10.0, 7.2)]


def test_training_curve_and_bars_are_pngs(tmp_path: Path) -> None:
    png = training_curve(CURVE, tmp_path / "curve.png", k=5, chance=0.1)
    assert png.read_bytes()[:4] == b"\x89PNG"
    bars = grouped_bars(
        ["a", "b"],
        [Series("x", [10.0, None], low=[5.0, 0.0], high=[15.0, 0.0]), Series("y", [0.0, 20.0])],
        tmp_path / "bars.png",
        title="t",
        ylabel="R@5 (%)",
        chance=[1.0, None],
    )
    assert bars.read_bytes()[:4] == b"\x89PNG"
