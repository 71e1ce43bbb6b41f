"""What machine a benchmark ran on, and its fp32 peak estimated from the CPU's flags.

The peak is ``cores x clock x fp32 FLOP per cycle per core``:

* clock: ``cpuinfo_max_freq`` from sysfs when the kernel exposes it, else the ``cpu MHz``
  of ``/proc/cpuinfo`` (on a VM usually the nominal TSC clock, not the boost clock,
  so the estimate can be low by the boost ratio);
* FLOP per cycle: FMA counts 2 FLOPs per lane; two FMA pipes per core on every x86 with
  FMA since Haswell/Zen 2. Lanes: 16 fp32 for AVX-512 on Intel; 8 on AMD, whose Zen 4
  runs 512-bit instructions as two 256-bit halves; 8 for AVX2. So 64 (Intel AVX-512),
  32 (AMD AVX-512, or AVX2+FMA), 8 (SSE only).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                info.setdefault(key, value)
    except OSError:
        pass
    return info


def cpu_peak_gflops() -> tuple[float, str]:
    """(fp32 GFLOP/s peak, how it was estimated)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = os.cpu_count() or 1
    try:
        ghz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
        clock = "cpuinfo_max_freq"
    except (OSError, ValueError):
        ghz = float(info.get("cpu MHz", "0") or 0) / 1000
        clock = "/proc/cpuinfo cpu MHz"
    amd = "AMD" in info.get("vendor_id", "")
    if "avx512f" in flags:
        per_cycle, isa = (32, "AVX-512 on AMD (2x256-bit FMA)") if amd else (64, "AVX-512 (2 FMA pipes)")
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2 + FMA (2 pipes)"
    else:
        per_cycle, isa = 8, "SSE"
    peak = cores * ghz * per_cycle
    return peak, f"{cores} cores x {ghz:.2f} GHz ({clock}) x {per_cycle} FLOP/cycle ({isa})"


def describe() -> str:
    """One line: CPU model, cores, memory, GPU(s), TensorFlow version."""
    import tensorflow as tf

    info = _cpuinfo()
    try:
        mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return (f"{info.get('model name', platform.processor())}, {os.cpu_count()} logical cores, "
            f"{mem:.0f} GiB RAM, GPU: {', '.join(gpus) or 'none'}; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")
