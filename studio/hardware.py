"""The GPUs of this machine via NVML (pynvml from nvidia-ml-py), with a clean "no GPU" answer.

NVML is imported lazily; without a driver or a GPU, ``detect_gpus()`` returns an empty list whose
``reason`` says why, so callers never need a try/except.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GiB = 1024 ** 3
DEFAULT_BUDGET = 24 * GiB


@dataclass
class GpuInfo:
    """One GPU as NVML reports it (bytes, percent, degrees Celsius)."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    utilization: int | None
    temperature: int | None
    driver: str
    compute_capability: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class GpuList(list):
    """A list of GpuInfo that also says why it is empty (``reason``)."""

    def __init__(self, items: list | None = None, reason: str = ""):
        super().__init__(items or [])
        self.reason = reason


def _nvml() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _one(nv: Any, index: int, driver: str) -> GpuInfo:
    h = nv.nvmlDeviceGetHandleByIndex(index)
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    try:
        util = int(nv.nvmlDeviceGetUtilizationRates(h).gpu)
    except nv.NVMLError:
        util = None
    try:
        temp = int(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
    except nv.NVMLError:
        temp = None
    try:
        cc = tuple(nv.nvmlDeviceGetCudaComputeCapability(h))
    except (nv.NVMLError, AttributeError):
        cc = None
    return GpuInfo(index=index, name=_text(nv.nvmlDeviceGetName(h)), total_bytes=int(mem.total),
                   free_bytes=int(mem.free), used_bytes=int(mem.used), utilization=util, temperature=temp,
                   driver=driver, compute_capability=cc)


def detect_gpus() -> GpuList:
    """Every NVIDIA GPU, or an empty list with ``reason`` (no driver, no GPU, NVML missing)."""
    try:
        nv = _nvml()
    except ImportError:
        return GpuList(reason="nvidia-ml-py (pynvml) is not installed")
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return GpuList(reason=f"no NVIDIA driver found ({_text(e) or type(e).__name__})")
    try:
        driver = _text(nv.nvmlSystemGetDriverVersion())
        gpus = [_one(nv, i, driver) for i in range(nv.nvmlDeviceGetCount())]
        return GpuList(gpus, reason="" if gpus else "the NVIDIA driver reports no GPU")
    except Exception as e:
        return GpuList(reason=f"NVML error: {_text(e) or type(e).__name__}")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def default_budget_bytes() -> int:
    """The first GPU's total memory, else 24 GiB (a common consumer card) for planning."""
    gpus = detect_gpus()
    return gpus[0].total_bytes if gpus else DEFAULT_BUDGET


def gpu_memory_used(index: int = 0) -> int | None:
    """Device memory in use on GPU ``index`` as nvidia-smi shows it, or None without a GPU (cheap: one query)."""
    try:
        nv = _nvml()
    except Exception:
        return None
    try:
        return int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:
        return None
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass
