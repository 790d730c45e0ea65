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

    def __init__(self, items: list | None = None, reason: str = "", cuda_driver: str | None = None):
        super().__init__(items or [])
        self.reason = reason
        self.cuda_driver = cuda_driver


def _nvml() -> Any:
    """pynvml, initialised; a missing package is an install bug and raises ImportError, loudly."""
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
    except ImportError:  # nvidia-ml-py is a dependency: its absence is a broken install, said loudly
        raise
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return GpuList(reason=f"no NVIDIA driver found ({_text(e) or type(e).__name__})")
    try:
        driver = _text(nv.nvmlSystemGetDriverVersion())
        gpus = [_one(nv, i, driver) for i in range(nv.nvmlDeviceGetCount())]
        return GpuList(gpus, reason="" if gpus else "the NVIDIA driver reports no GPU",
                       cuda_driver=_cuda_version(nv.nvmlSystemGetCudaDriverVersion()))
    except Exception as e:
        return GpuList(reason=f"NVML error: {_text(e) or type(e).__name__}")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


# What a CPU run may not use of the computer's memory: the OS and other programs keep 15% (at least 2 GiB),
# and the studio's window another 0.5 GiB. The planner's CPU prediction is the worker's whole resident peak
# (its tensors, and its libraries and kernels' workspace: studio.memory.CPU_RUNTIME); these are everything else.
OS_RESERVE_FRACTION = 0.15
OS_RESERVE_MIN = 2 * GiB
APP_RESERVE = GiB // 2


def cpu_budget_bytes(total: int | None = None) -> int:
    """System RAM a CPU run's worker may use: the total minus what the OS and the window need."""
    if total is None:
        import psutil

        total = int(psutil.virtual_memory().total)
    return max(GiB // 2, total - max(OS_RESERVE_MIN, int(total * OS_RESERVE_FRACTION)) - APP_RESERVE)


def training_device(gpus: GpuList | None = None) -> str:
    """"cuda" when NVML sees an NVIDIA GPU, else "cpu" (where the worker then trains)."""
    gpus = detect_gpus() if gpus is None else gpus
    return "cuda" if gpus else "cpu"


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



def nvidia_gpus() -> dict:
    """The doctor's view of the GPUs: each one's memory, the driver and its CUDA version, or why none."""
    gpus = detect_gpus()
    return {"gpus": [{"index": g.index, "name": g.name, "memory_total_mb": g.total_bytes // 2**20,
                      "memory_free_mb": g.free_bytes // 2**20} for g in gpus],
            "driver": gpus[0].driver if gpus else None, "cuda_driver": gpus.cuda_driver,
            "error": None if gpus else gpus.reason}


def _cuda_version(code: int) -> str:
    """NVML encodes the driver's CUDA version as 1000*major + 10*minor (12080 -> 12.8)."""
    return f"{code // 1000}.{(code % 1000) // 10}"
