"""The interpreter's compiled kernels: one small C file per kernel family in ``enclave/csrc``.

Why C inside the trusted base: the interpreter pays about 1 us of Python and numpy dispatch per
array operation, and some heads are made of many tiny ones (a tree walk is a gather and a compare
per level over 40 trees of depth 3; a recurrent step is a dozen gate operations on 128 floats;
a ViT block's norms and activations are as many again). ``scripts/bench_heads`` measured those
heads at 2.5-6.6x onnxruntime in numpy alone (docs/BENCHMARKS.md). A kernel here does one such
loop over flat buffers in one call, stays a few hundred lines of readable C with no allocation
it does not free in the same call, and checks every index and size it is given before it reads
memory (a malformed table raises ``ValueError``; it never reads out of bounds). onnxruntime
inside the enclave would do the same job with far more code and an optimiser of its own.

Build: ``scripts/build_native`` (run by ``scripts/setup``) compiles each ``csrc/<name>.c`` with the
machine's C compiler and the flags in ``csrc/cflags`` into ``.venv/native/<name>-<digest>.so``,
where the digest is SHA-256 over the flags, the shared headers (``csrc/*.h``, sorted) and the
source (16 hex digits). :func:`load` opens
only the object of the source in this checkout, so a build of other code is never loaded, and
:mod:`enclave.identity` measures the flags, the headers, the sources and the objects.

Imports: the standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

from splitseal.errors import ConfigError

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
PROJECT_DIR = SOURCE_DIR.parent.parent
#: Where ``scripts/build_native`` writes the shared objects (inside the ignored ``.venv``).
BUILD_DIR = PROJECT_DIR / ".venv" / "native"
FLAGS_FILE = "cflags"


def kernel_names(source_dir: Path = SOURCE_DIR) -> list[str]:
    """The kernel families, one per C file, sorted."""
    return sorted(p.stem for p in source_dir.glob("*.c"))


def header_names(source_dir: Path = SOURCE_DIR) -> list[str]:
    """The headers every kernel may include (``buffers.h``), sorted: part of every digest."""
    return sorted(p.name for p in source_dir.glob("*.h"))


def digest(name: str, source_dir: Path = SOURCE_DIR) -> str:
    """16 hex digits of SHA-256 over the compiler flags, the headers and the kernel's source."""
    h = hashlib.sha256((source_dir / FLAGS_FILE).read_bytes())
    for header in header_names(source_dir):
        h.update((source_dir / header).read_bytes())
    h.update((source_dir / f"{name}.c").read_bytes())
    return h.hexdigest()[:16]


def object_path(name: str, source_dir: Path = SOURCE_DIR, build_dir: Path | None = None) -> Path:
    """The shared object built from the source of ``name`` in ``source_dir``."""
    return (BUILD_DIR if build_dir is None else build_dir) / f"{name}-{digest(name, source_dir)}.so"


@functools.cache
def load(name: str) -> ModuleType:
    """The compiled kernel module ``name`` (``csrc/<name>.c``), built from this very source."""
    if not (SOURCE_DIR / f"{name}.c").is_file():
        raise ConfigError(f"no kernel source enclave/csrc/{name}.c")
    path = object_path(name)
    if not path.is_file():
        raise ConfigError(f"the enclave's compiled kernel {name!r} is not built for this source "
                          f"(expected {path}): run scripts/setup, which compiles enclave/csrc/*.c "
                          f"with the machine's C compiler (scripts/build_native)")
    # the init function is PyInit_<last component>, so the module's name must be the file's stem
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
