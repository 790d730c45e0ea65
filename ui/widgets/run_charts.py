"""The Train page's live charts (loss, learning rate, throughput, memory, and a preference chart for DPO/ORPO
runs), fed with the worker's metric and memory events. The charts are pyqtgraph (``ui.charts``), built on
the first run so that opening the studio stays fast."""
from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from studio.units import number
from ui.widgets.common import label

GIB = 1024 ** 3
METRIC_SERIES = (("loss", "loss", "train"), ("eval_loss", "loss", "validation"), ("learning_rate", "lr", "lr"),
                 ("tokens_per_s", "throughput", "tokens/s"))  # (event key, chart, series)
PREFERENCE_SERIES = (("rewards/margins", "margin"), ("rewards/accuracies", "accuracy"),
                     ("eval_rewards/margins", "validation margin"))
MEMORY_SERIES = (("allocated", "allocated"), ("reserved", "reserved"), ("device_used", "device used"))


def memory_title(on_cpu: bool, ratio: float | None) -> str:
    """The memory chart's title: what it shows, and the measured peak over the predicted one when known."""
    title = "Memory (no GPU: the worker process)" if on_cpu else "GPU memory"
    return f"{title}: peak {ratio:.2f}× predicted" if ratio else title


class RunCharts(QWidget):
    """Four charts in a grid (a fifth for preference runs); ``charts`` is empty until ``ensure`` builds them."""

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
        for i, chart in enumerate(self.charts.values()):
            self.grid.addWidget(chart, i // 2, i % 2)
        self.refresher = ChartRefresher(list(self.charts.values()), self)

    def add_metric(self, d: dict, step: float) -> None:
        for key, chart, series in METRIC_SERIES:
            v = number(d.get(key))
            if v is not None:
                self.charts[chart].append(series, step, v)
        if any(number(d.get(key)) is not None for key, _ in PREFERENCE_SERIES):
            chart = self.charts.get("preference") or self._add_preference()
            for key, name in PREFERENCE_SERIES:
                v = number(d.get(key))
                if v is not None:
                    chart.append(name, step, v)

    def _add_preference(self):
        """DPO/ORPO runs: a chart of the reward margin (chosen minus rejected) and the pairs ranked right."""
        from ui.charts import LiveChart

        chart = LiveChart("Preference: chosen − rejected", "reward")
        chart.add_series("margin", "#0072B2")
        chart.add_series("accuracy", "#009E73", dashed=True)
        chart.add_series("validation margin", "#D55E00", width=2.5)
        self.charts["preference"] = chart
        n = len(self.charts) - 1
        self.grid.addWidget(chart, n // 2, n % 2)
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
        """Empty every chart for the next run; the preference chart goes until a run reports margins."""
        pref = self.charts.pop("preference", None)
        if pref is not None:
            self.grid.removeWidget(pref)
            pref.deleteLater()
            if self.refresher is not None:
                self.refresher.charts.remove(pref)
        for chart in self.charts.values():
            chart.clear_data()
            for name in list(chart.lines):
                chart.set_hline(name, None)
        if "memory" in self.charts and self._ratio is not None:  # the last run's ratio is not the next one's
            self._ratio = None
            mem = self.charts["memory"].getPlotItem()
            mem.setTitle(memory_title(self._on_cpu, None), color=mem.titleLabel.opts.get("color"), size="10pt")
