"""Which torch the runtime installs: the pinned version, its CUDA builds, and the choice for this machine.

A CUDA build when an NVIDIA GPU and driver answer (on Windows the newest build that the driver and
every GPU can run), the CPU build otherwise; ``LORA_STUDIO_TORCH_VARIANT`` and ``LORA_STUDIO_TORCH_INDEX``
override. ``studio.runtime.setup`` installs what this chooses; check the table whenever TORCH_VERSION
changes.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from studio.hardware import detect_gpus, nvidia_gpus
from studio.runtime.state import RuntimeSetupError

TORCH_VERSION = "2.13.0"
# PyTorch's own wheel index for CPU-only builds: on Linux the plain PyPI wheel is the CUDA build
# (several GB); the CPU build of the same version is on this index (pytorch.org "Get started").
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# On Windows the PyPI wheel is CPU-only; each CUDA build has its own index, PYTORCH_INDEX/<tag>,
# and its own local version (torch==2.13.0+cu126), which the setup pins so that pip can only take
# that build: never PyPI's CPU wheel of the same version in its place.
PYTORCH_INDEX = "https://download.pytorch.org/whl"

@dataclass(frozen=True)
class CudaBuild:
    """One CUDA build of the pinned torch: what the driver must support and which GPUs it has kernels for."""

    tag: str                      # local version and index name: cu126
    cuda: tuple[int, int]         # the CUDA version the driver must support (NVML's driver CUDA version)
    min_cc: tuple[int, int]       # oldest compute capability it has kernels for
    below_cc: tuple[int, int] | None  # first compute capability it has none for (None: no upper limit)
    driver: str                   # the Windows driver branch that brings that CUDA version


# torch 2.13.0's CUDA builds (pytorch/pytorch RELEASE.md: release compatibility matrix and CUDA support
# matrix): CUDA 12.6 for Maxwell 5.0 .. Hopper 9.0 and CUDA 13.0 for Turing 7.5 .. Blackwell 12.0;
# 13.2 is experimental and there is no 12.8 build of 2.13. Newest first: the setup takes the newest
# build that the driver and every GPU can run. Check this table whenever TORCH_VERSION changes.
TORCH_CUDA_BUILDS = (
    CudaBuild("cu130", (13, 0), (7, 5), None, "580"),
    CudaBuild("cu126", (12, 6), (5, 0), (10, 0), "560"),
)


@dataclass
class TorchChoice:
    """Which torch build to install and why (the why is shown to the user)."""

    variant: str
    requirement: str
    pip_args: list[str] = field(default_factory=list)
    reason: str = ""


def choose_torch(gpus: dict | None = None, system: str | None = None) -> TorchChoice:
    """CUDA build when an NVIDIA GPU and driver answer, CPU build otherwise; env vars override.

    ``gpus`` is shaped like ``hardware.nvidia_gpus()`` (plus each GPU's ``compute_capability``).
    """
    system = system or platform.system()
    requirement = f"torch=={TORCH_VERSION}"
    variant = os.environ.get("LORA_STUDIO_TORCH_VARIANT", "auto").strip().lower() or "auto"
    if variant not in ("auto", "cpu", "cuda"):
        raise RuntimeSetupError(f"LORA_STUDIO_TORCH_VARIANT={variant!r} is not one of auto, cpu, cuda: "
                                "unset it or pick one of those")
    reason = f"LORA_STUDIO_TORCH_VARIANT={variant}"
    gpus = gpus if gpus is not None else _gpus_now()
    if variant == "auto":
        found = gpus.get("gpus") or []
        variant = "cuda" if found and system != "Darwin" else "cpu"
        reason = (f"NVIDIA GPU found: {found[0]['name']}" if variant == "cuda"
                  else "no NVIDIA GPU with a working driver found")
    index = os.environ.get("LORA_STUDIO_TORCH_INDEX", "").strip()
    if index:
        return TorchChoice(variant, requirement, ["--extra-index-url", index], f"{reason}; index {index}")
    if variant == "cuda" and system == "Windows":  # PyPI's Windows wheel is the CPU build
        build, why = torch_cuda_build(gpus)
        return TorchChoice(variant, f"{requirement}+{build.tag}",
                           ["--extra-index-url", f"{PYTORCH_INDEX}/{build.tag}"], f"{reason}; {why}")
    # An *extra* index: pip takes the highest match, and "2.13.0+cpu" sorts above "2.13.0"; if the
    # index cannot be reached pip goes on with the configured one (PyPI), whose wheel also runs.
    if variant == "cpu" and system == "Linux":  # PyPI's Linux wheel is the CUDA build
        return TorchChoice(variant, requirement, ["--extra-index-url", CPU_INDEX], reason)
    return TorchChoice(variant, requirement, [], reason)


def torch_cuda_build(gpus: dict) -> tuple[CudaBuild, str]:
    """The newest CUDA build of the pinned torch that the driver and the GPUs can run, and why.

    Raises RuntimeSetupError naming the driver, the CUDA version it supports and the driver to
    install when the driver is too old for every build that has kernels for these GPUs.
    """
    found = gpus.get("gpus") or []
    if not found:  # LORA_STUDIO_TORCH_VARIANT=cuda on a machine where NVML sees nothing
        oldest = TORCH_CUDA_BUILDS[-1]
        return oldest, f"no GPU seen: {oldest.tag}, the build for the widest range of GPUs"
    builds = [b for b in TORCH_CUDA_BUILDS if all(_has_kernels(b, g) for g in found)]
    note = ""
    if not builds:  # GPUs of generations that no single build covers: the first GPU decides
        builds = [b for b in TORCH_CUDA_BUILDS if _has_kernels(b, found[0])]
        note = f"; no {TORCH_VERSION} build runs on all the GPUs, so this one is for {found[0]['name']}"
    if not builds:
        cc = ".".join(map(str, found[0]["compute_capability"]))
        raise RuntimeSetupError(
            f"the {found[0]['name']} (compute capability {cc}) is older than any CUDA build of PyTorch "
            f"{TORCH_VERSION} supports ({'.'.join(map(str, TORCH_CUDA_BUILDS[-1].min_cc))} or newer): "
            "set LORA_STUDIO_TORCH_VARIANT=cpu to train on the processor instead")
    driver, supports = gpus.get("driver") or "unknown", _version(gpus.get("cuda_driver"))
    if supports is None:
        return builds[-1], f"the driver's CUDA version is unknown: {builds[-1].tag}, the oldest build{note}"
    for build in builds:
        if supports >= build.cuda:
            return build, f"driver {driver} supports CUDA {gpus['cuda_driver']}: {build.tag}{note}"
    need = builds[-1]
    raise RuntimeSetupError(
        f"the NVIDIA driver {driver} supports CUDA {gpus['cuda_driver']}, but PyTorch {TORCH_VERSION} for "
        f"the {found[0]['name']} needs CUDA {'.'.join(map(str, need.cuda))} or newer ({need.tag}): install "
        f"NVIDIA driver {need.driver} or newer (nvidia.com/drivers, or the NVIDIA app), restart, then set up "
        "the runtime again; or set LORA_STUDIO_TORCH_VARIANT=cpu to train on the processor instead")


def _has_kernels(build: CudaBuild, gpu: dict) -> bool:
    cc = gpu.get("compute_capability")
    if not cc:  # unknown (an old NVML): assume the GPU is one the build supports
        return True
    cc = tuple(cc)[:2]
    return build.min_cc <= cc and (build.below_cc is None or cc < build.below_cc)


def _version(text: str | None) -> tuple[int, int] | None:
    parts = [int(p) for p in str(text or "").split(".")[:2] if p.isdigit()]
    return tuple((parts + [0])[:2]) if parts else None  # type: ignore[return-value]


def _gpus_now() -> dict:
    """``hardware.nvidia_gpus()`` with each GPU's compute capability (which CUDA build has its kernels)."""

    info = nvidia_gpus()
    capability = {g.index: g.compute_capability for g in detect_gpus()}
    for gpu in info.get("gpus") or []:
        gpu["compute_capability"] = capability.get(gpu["index"])
    return info
