"""Demo section: a C plugin compiled on the spot, its new op, its lerp override,
and what a call into a plugin kernel costs."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import timeit
from pathlib import Path

import numpy as np

from fastinterp.demo import save_figure

TITLE = "Plugins: a C kernel compiled, loaded, called, unloaded"
ORDER = 90

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_c" / "scale_add.c"


def _build(out_dir: Path) -> Path | None:
    import fastinterp as fi
    cc = shlex.split(os.environ.get("CC", "cc")) or ["cc"]   # "ccache gcc", "gcc -m64"
    if not EXAMPLE.exists() or shutil.which(cc[0]) is None:
        return None
    lib = out_dir / "plugin" / "libfi_example.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*cc, "-std=c99", "-O2", "-fPIC", "-shared", "-I", fi.get_include(),
                    str(EXAMPLE), "-o", str(lib), "-lm"], check=True)
    return lib


def _per_call_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def run(out_dir: Path, quick: bool) -> list[str]:
    import matplotlib.pyplot as plt
    import fastinterp as fi
    from fastinterp import _registry as registry

    lib = _build(out_dir)
    if lib is None:
        return ["   no C compiler or no examples/ folder here: see the README's Plugins section to build one"]
    lines = [f"   compiled {EXAMPLE.name} with the system compiler -> {lib.name}"]
    n = 16
    a = np.linspace(0, 1, n, dtype=np.float32)
    b = np.linspace(1, 3, n, dtype=np.float32)
    out = np.empty(n, np.float32)
    t = np.full(1, 0.25, np.float32)
    number = 200 if quick else 20000

    reference = fi.lerp(a, b, 0.25)
    builtin_kernel = registry.lookup("lerp", "cpu", "float32")
    timings = {"built-in lerp kernel": _per_call_us(lambda: builtin_kernel(out, a, b, t), number),
               "fi.lerp (built-in)": _per_call_us(lambda: fi.lerp(a, b, 0.25), number)}
    info = fi.plugins.load(lib)
    try:
        lines.append(f"   loaded plugin {info.name!r} {info.version} (ABI {info.abi[0]}.{info.abi[1]}): "
                     f"new ops {list(info.ops)}, kernels {len(info.kernels)}")
        got = fi.ops.scale_add(a, b, alpha=2.0)
        lines.append(f"   fi.ops.scale_add(a, b, alpha=2) max error vs NumPy: "
                     f"{np.abs(got - (2 * a + b)).max():.1e}")
        plugin_lerp = fi.lerp(a, b, 0.25)
        lines.append(f"   fi.lerp now runs {fi.last_kernel().kernel!r}; max difference from the "
                     f"built-in: {np.abs(plugin_lerp - reference).max():.1e}")
        plugin_kernel = registry.lookup("lerp", "cpu", "float32")
        timings["plugin lerp kernel"] = _per_call_us(lambda: plugin_kernel(out, a, b, t), number)
        timings["fi.lerp (plugin)"] = _per_call_us(lambda: fi.lerp(a, b, 0.25), number)
        timings["fi.ops.scale_add"] = _per_call_us(lambda: fi.ops.scale_add(a, b), number)
    finally:
        fi.plugins.unload(info.name)
    fi.lerp(a, b, 0.25)
    lines.append(f"   unloaded: fi.lerp runs the {fi.last_kernel().source} kernel again")
    for name, us in timings.items():
        lines.append(f"   {name:<22} {us:7.2f} us per call ({n} elements)")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(timings)
    ax.barh(names, [timings[k] for k in names],
            color=["#888" if "built-in" in k else "#2a7" for k in names])
    ax.set_xlabel(f"µs per call, {n} float32 elements")
    ax.set_title("Calling into a C plugin kernel vs the built-in one")
    ax.invert_yaxis()
    png = save_figure(fig, out_dir / "plugins_overhead.png", dpi=110)
    lines.append(f"   wrote {png.name}")
    return lines
