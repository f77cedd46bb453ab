"""Keep freed CPU memory in the process instead of handing it back to the kernel after every tensor.

Why: glibc serves blocks above its mmap threshold (128 KiB, raised on the fly) with fresh ``mmap`` pages and trims
the heap top back to the kernel once a few hundred KiB are free. A CPU training step allocates and frees the same
multi-MiB activations every step, so each step pays tens of thousands of page faults (the kernel zeroes every new
page). Raising both thresholds keeps those pages mapped and reused, so a steady-state step takes almost no page
faults and runs faster (benchmarks/results/cpu_allocator.json). The price is that up to ``keep_bytes`` of freed
memory stays with the process (reported as resident) until it exits. Inference gains too
(benchmarks/results/bench_allocator.json), hence `retain_for_inference`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit: larger blocks are always mmapped
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


INFERENCE_OPT_OUT = "VITKIT_MALLOC_DEFAULTS"


def retain_for_inference() -> bool:
    """What `vitkit predict | bench | serve | eval` call first: retain freed memory unless the environment variable
    VITKIT_MALLOC_DEFAULTS=1 asks for the C library's defaults (e.g. to compare with another library's figures)."""
    return os.environ.get(INFERENCE_OPT_OUT, "") not in ("1", "true", "yes") and retain_freed_memory()


def glibc_malloc() -> bool:
    """Whether this process's allocator is glibc's, the only one whose knobs are set here."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def retain_freed_memory(keep_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc reuse freed blocks up to 32 MiB from its heap and keep up to ``keep_bytes`` free at the
    heap top. Process-wide and lasting (forked data-loader workers inherit it).

    Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl): their allocators
    have other knobs.
    """
    if keep_bytes < _MAX_MMAP_THRESHOLD:
        raise ValueError(f"keep_bytes must be at least the mmap threshold ({_MAX_MMAP_THRESHOLD} bytes), "
                         f"got {keep_bytes}")
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # both set explicitly: setting either one turns off glibc's dynamic adjustment of the other
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, min(keep_bytes, 2**31 - 1)) == 1 and ok
