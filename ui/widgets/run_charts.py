"""The Train page's live charts (loss, learning rate, throughput, memory; a preference chart for DPO/ORPO
runs; reward, KL, completion length, the share cut at the length limit and the share of prompts whose
completions all scored alike for grpo runs), fed with the
worker's metric and memory events. The charts are pyqtgraph (``ui.charts``), built on the first run so that
opening the studio stays fast; an objective's own charts are built on the first metric that carries them."""
from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from studio.units import number
from ui.widgets.common import label

GIB = 1024 ** 3
METRIC_SERIES = (("loss", "loss", "train"), ("eval_loss", "loss", "validation"), ("learning_rate", "lr", "lr"),
                 ("tokens_per_s", "throughput", "tokens/s"))  # (event key, chart, series)
PREFERENCE_SERIES = (("rewards/margins", "margin"), ("rewards/accuracies", "accuracy"),
                     ("eval_rewards/margins", "validation margin"))
GRPO_SERIES = (("reward", "reward", "mean", 1), ("reward_std", "reward", "spread", 1), ("kl", "kl", "KL", 1),
               ("completions/mean_length", "completions", "mean", 1),
               ("completions/max_length", "completions", "longest", 1),
               ("completions/clipped_ratio", "cut", "cut", 100),
               # TRL's share of prompts whose completions all scored alike: a group that teaches nothing
               ("frac_reward_zero_std", "cut", "no signal", 100))  # (event key, chart, series, scale)
# An objective's charts: title, y label, fixed y range, series (name, colour, dashed, width).
EXTRA_CHARTS = {
    "preference": ("Preference: chosen − rejected", "reward", None,
                   (("margin", "#0072B2", False, 2.0), ("accuracy", "#009E73", True, 2.0),
                    ("validation margin", "#D55E00", False, 2.5))),
    "reward": ("Reward", "reward", None, (("mean", "#0072B2", False, 2.5), ("spread", "#0072B2", True, 1.5))),
    "kl": ("KL to the base", "KL", None, (("KL", "#D55E00", False, 2.0),)),
    "completions": ("Completions", "tokens", None, (("mean", "#009E73", False, 2.0), ("longest", "#009E73", True, 1.5))),
    "cut": ("Cut at the limit · prompts with no signal", "%", (0, 100),
            (("cut", "#CC79A7", False, 2.0), ("no signal", "#7F7F7F", True, 1.5))),
}
WIDE = 6  # more charts than this: three columns, so that a grpo run's eight stay readable on one screen
MIN_HEIGHT = {1: 160, 2: 160, 3: 120}  # a chart's, by rows of charts: three rows share the page with the samples
MEMORY_SERIES = (("allocated", "allocated"), ("reserved", "reserved"), ("device_used", "device used"))


def memory_title(on_cpu: bool, ratio: float | None) -> str:
    """The memory chart's title: what it shows, and the measured peak over the predicted one when known."""
    title = "Process memory (no GPU)" if on_cpu else "GPU memory"  # short: a chart can be a third of the page wide
    return f"{title}: peak {ratio:.2f}× predicted" if ratio else title


class RunCharts(QWidget):
    """Four charts in a grid (more for DPO/ORPO and grpo runs); ``charts`` is empty until ``ensure`` builds them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(8)
        self.placeholder = label("Charts appear here when a run starts.", "muted")
        self.grid.addWidget(self.placeholder, 0, 0)
        self.charts: dict = {}
        self.refresher = None
        self._on_cpu = False
        self._ratio: float | None = None

    def ensure(self) -> None:
        """Build the pyqtgraph charts (imports pyqtgraph; done once, after the window is up)."""
        if self.charts:
            return
        from ui.charts import ChartRefresher, LiveChart

        self.placeholder.hide()
        loss = LiveChart("Loss", "loss")
        loss.add_series("train", "#0072B2")
        loss.add_series("validation", "#D55E00", width=2.5)
        lr = LiveChart("Learning rate", "lr")
        lr.add_series("lr", "#009E73")
        tput = LiveChart("Throughput", "tokens/s")
        tput.add_series("tokens/s", "#CC79A7")
        mem = LiveChart("GPU memory", "GiB", x_label="seconds")
        mem.add_series("allocated", "#0072B2")
        mem.add_series("reserved", "#E69F00")
        mem.add_series("device used", "#009E73")
        self.charts.update({"loss": loss, "lr": lr, "throughput": tput, "memory": mem})
        self._place()
        self.refresher = ChartRefresher(list(self.charts.values()), self)

    def _place(self) -> None:
        """Lay the charts out in order, two columns (three when there are many of them)."""
        cols = 3 if len(self.charts) > WIDE else 2
        rows = -(-len(self.charts) // cols)
        for chart in self.charts.values():
            self.grid.removeWidget(chart)
        for i, chart in enumerate(self.charts.values()):
            self.grid.addWidget(chart, i // cols, i % cols)
            chart.setMinimumHeight(MIN_HEIGHT[rows])
        for c in range(3):  # a column left from three: no width
            self.grid.setColumnStretch(c, 1 if c < cols else 0)

    def add_metric(self, d: dict, step: float) -> None:
        for key, chart, series in METRIC_SERIES:
            v = number(d.get(key))
            if v is not None:
                self.charts[chart].append(series, step, v)
        if any(number(d.get(key)) is not None for key, _ in PREFERENCE_SERIES):
            for key, name in PREFERENCE_SERIES:
                v = number(d.get(key))
                if v is not None:
                    self._extra("preference").append(name, step, v)
        if number(d.get("reward")) is not None:
            self._add_grpo(d, step)

    def _add_grpo(self, d: dict, step: float) -> None:
        """grpo runs: the completions' reward (mean and spread, and each reward's mean when several are mixed),
        the KL to the base, the completions' length, the share cut at the length limit and the share of prompts
        whose completions all scored the same (no signal: grpo learns from differences within a group)."""
        for key, chart, series, scale in GRPO_SERIES:
            v = number(d.get(key))
            if v is not None:
                self._extra(chart).append(series, step, v * scale)
        presets = {k[len("rewards/"):-len("/mean")]: number(v) for k, v in d.items()
                   if k.startswith("rewards/") and k.endswith("/mean") and number(v) is not None}
        for name, v in presets.items() if len(presets) > 1 else ():
            self._extra("reward").append(name, step, v)

    def _extra(self, name: str):
        """An objective's chart (``EXTRA_CHARTS``), built when its first point arrives."""
        if name in self.charts:
            return self.charts[name]
        from ui.charts import LiveChart

        title, y_label, y_range, series = EXTRA_CHARTS[name]
        chart = LiveChart(title, y_label, y_range=y_range)
        for s, color, dashed, width in series:
            chart.add_series(s, color, dashed=dashed, width=width)
        self.charts[name] = chart
        self._place()
        if self.refresher is not None:
            self.refresher.charts.append(chart)
        return chart

    def add_memory(self, d: dict, t: float) -> None:
        """A memory sample at ``t`` seconds: the allocator's figures, one line per GPU (or process), the lines
        of the budget and the predicted peak."""
        mem = self.charts["memory"]
        for key, series in MEMORY_SERIES:
            v = number(d.get(key))
            if v is not None:
                mem.append(series, t, v / GIB)
        on_cpu = d.get("device") == "cpu"
        ratio = number(d.get("peak_ratio"))
        if on_cpu != self._on_cpu or ratio != self._ratio:
            self._on_cpu, self._ratio = on_cpu, ratio
            mem.getPlotItem().setTitle(memory_title(on_cpu, ratio),
                                       color=mem.getPlotItem().titleLabel.opts.get("color"), size="10pt")
        ranks = d.get("gpus") if isinstance(d.get("gpus"), list) else []
        for r in ranks if len(ranks) > 1 else []:  # several processes: one line per GPU (per process on the CPU)
            v = number(r.get("reserved")) if isinstance(r, dict) else None
            if v is not None:
                mem.append(f"{'process' if on_cpu else 'GPU'} {r.get('rank')} reserved", t, v / GIB)
        budget, peak = number(d.get("budget")), number(d.get("predicted_peak"))
        mem.set_hline("budget", budget / GIB if budget else None, "#CF222E", below=True)
        mem.set_hline("predicted peak", peak / GIB if peak else None, "#8250DF")
        measured = number(d.get("measured_peak"))
        mem.set_hline("measured peak", measured / GIB if measured else None, "#1A7F37", below=True)

    def set_planned(self, tokens_per_s: float | None) -> None:
        if self.charts and tokens_per_s:
            self.charts["throughput"].set_hline("planned", tokens_per_s)

    def refresh(self) -> None:
        for chart in self.charts.values():
            chart.refresh()

    def clear(self) -> None:
        """Empty every chart for the next run; an objective's charts go until a run reports their metrics."""
        for name in [n for n in self.charts if n in EXTRA_CHARTS]:
            chart = self.charts.pop(name)
            self.grid.removeWidget(chart)
            chart.deleteLater()
            if self.refresher is not None:
                self.refresher.charts.remove(chart)
        if self.charts:
            self._place()
        for chart in self.charts.values():
            chart.clear_data()
            for name in list(chart.lines):
                chart.set_hline(name, None)
        if "memory" in self.charts and self._ratio is not None:  # the last run's ratio is not the next one's
            self._ratio = None
            mem = self.charts["memory"].getPlotItem()
            mem.setTitle(memory_title(self._on_cpu, None), color=mem.titleLabel.opts.get("color"), size="10pt")
