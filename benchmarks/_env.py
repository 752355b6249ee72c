"""Process settings every benchmark applies from its command line before torch (or JAX) is imported."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence


def configure(argv: Sequence[str]) -> None:
    """Apply `--threads N` and the compile-cache choice to the environment; call before `import torch`.

    `--threads N` pins every contender (torch's intra-op pool and XLA's) to N threads.
    Without `--warm-cache` (or a TORCHINDUCTOR_CACHE_DIR already set) inductor gets a
    fresh, empty cache, so that "first call" is the real compile time. Both are read at
    import, and subprocesses (the memory workers) inherit them.
    """
    if "--threads" in argv:
        n = argv[list(argv).index("--threads") + 1]
        os.environ.update(
            OMP_NUM_THREADS=n,
            XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if n != '1' else 'false'} intra_op_parallelism_threads={n}",
        )
    if "--warm-cache" not in argv and not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="purenn-bench-inductor-")
