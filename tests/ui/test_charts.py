"""The live charts as a user reads them: one point is visible, a flat curve has a sane range, a
series without points is not in the legend, a new run starts on fresh axes, step ticks are whole."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from ui.charts import CountAxis, LiveChart  # noqa: E402


def _legend_names(chart: LiveChart) -> list[str]:
    return [label.text for _sample, label in chart.legend.items]


def test_one_point_is_drawn_with_a_range_around_its_value(qtbot):
    chart = LiveChart("Learning rate", "lr")
    qtbot.addWidget(chart)
    chart.add_series("lr")
    chart.append("lr", 1, 2e-4)
    chart.refresh()
    assert chart.curves["lr"].opts["symbol"] == "o"  # a lone point is a dot, not an empty chart
    lo, hi = chart.getPlotItem().getViewBox().viewRange()[1]
    assert 0 < lo < 2e-4 < hi < 1e-3  # not pyqtgraph's -0.5 .. 0.5 around a flat line
    assert not chart.getPlotItem().getAxis("left").autoSIPrefix


def test_legend_lists_only_series_with_points_and_hides_for_one(qtbot):
    chart = LiveChart("Loss", "loss")
    qtbot.addWidget(chart)
    chart.add_series("train")
    chart.add_series("validation")
    for step in range(1, 60):
        chart.append("train", step, 3.0 / step)
    chart.refresh()
    assert _legend_names(chart) == ["train"] and not chart.legend.isVisible()
    assert chart.curves["train"].opts["symbol"] is None  # many points: a plain line
    chart.append("validation", 10, 1.0)
    chart.refresh()
    assert _legend_names(chart) == ["train", "validation"] and chart.legend.isVisible()


def test_a_new_run_starts_on_fresh_axes(qtbot):
    chart = LiveChart("Loss", "loss")
    qtbot.addWidget(chart)
    chart.add_series("train")
    for step in range(1, 500):
        chart.append("train", step, 100.0 - step / 10)
    chart.refresh()
    chart.clear_data()
    assert _legend_names(chart) == [] and chart.points("train") == 0
    chart.append("train", 1, 2.0)
    chart.append("train", 2, 1.5)
    chart.refresh()
    (x0, x1), (y0, y1) = chart.getPlotItem().getViewBox().viewRange()
    assert x1 < 10 and y1 < 10  # nothing left of the 500-step, loss-100 run


def test_step_axis_ticks_are_whole_numbers(qtbot):
    chart = LiveChart("Loss", "loss")
    qtbot.addWidget(chart)
    axis = chart.getPlotItem().getAxis("bottom")
    assert isinstance(axis, CountAxis)
    values = [v for _spacing, vs in axis.tickValues(1.0, 2.0, 400) for v in vs]
    assert values and all(float(v).is_integer() for v in values)
    time_axis = LiveChart("Memory", "GiB", x_label="seconds").getPlotItem().getAxis("bottom")
    assert not isinstance(time_axis, CountAxis)
