"""How many H100 instructions inductor's kernels issue per element, against the bytes they move.

    python benchmarks/gpu_codegen.py --preset mnist ... --out code.log     # or a TORCH_LOGS=output_code log
    python benchmarks/kernel_sass.py code.log [--top 12]

Every Triton kernel launched in the log is compiled for sm_90 by Triton's own compiler and ptxas, which need
no GPU and no driver, and its SASS is counted, with block sizes that make it straight-line code: pointwise
kernels and persistent reductions are, and a looped reduction becomes so with its block covering its whole
reduction (up to 4,096 values), so its loop runs once. Each thread then handles a fixed number of elements, and
the static count over that number is what the kernel issues per element. Two floors for each launch: issuing
that many warp-instructions (one per clock per SM sub-partition, 4 per SM) and moving inductor's estimate of its
bytes (profile_bandwidth, which gpu_codegen always sets) at the copy bandwidth. A kernel whose issue floor is the
higher one is bound by its instructions, not by memory: at 1.98 GHz, 132 SMs and 3.02 TB/s (session 14's H100)
the balance is 11 thread-instructions per byte, 44 per bf16 element read and written. Floors, not forecasts:
pipes narrower than the issue rate (integer, special functions, loads), latency, occupancy and the coalescing of
each access are left out, block sizes are representative rather than autotuned, templates are counted by their
bytes only, and a combo kernel (combo_kernels=true) is counted with every sub-kernel's code, of which each of its
programs runs one: an overestimate, small for the tiny kernels it combines.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from inductor_code import LAUNCH, kernel_sources, numel, split_graphs, traffic_gb

THREADS_PER_WARP = 32
SUBPARTITIONS_PER_SM = 4  # each issues one warp-instruction per clock
BLOCKS_1D = {"XBLOCK": 1024}  # inductor's usual config for a large 1-D pointwise kernel
BLOCKS_2D = {"YBLOCK": 32, "XBLOCK": 32}  # and for a tiled one
NUM_WARPS = 4
KINDS = ("pointwise", "persistent_reduction", "reduction")  # @triton_heuristics.KIND decorators compiled here
R0_BLOCK = re.compile(r"R0_BLOCK: tl\.constexpr = (\d+)")
R0_NUMEL = re.compile(r"r0_numel = (\d+)")
MAX_R0_BLOCK = 4096  # a looped reduction over more is left uncompiled (its loop would run more than once)


def block_sizes(signature: dict, source: str) -> tuple[dict, int] | None:
    """Representative constexpr block sizes for a kernel, and the elements one program covers; None where no
    block size makes it straight-line. A persistent reduction's R0_BLOCK is fixed in its source; a looped
    reduction's is set to cover its whole reduction, so that its loop runs once; XBLOCK then covers ~1024
    elements."""
    fixed = R0_BLOCK.search(source)
    if fixed or "R0_BLOCK" in signature:
        if fixed:
            r0, blocks = int(fixed.group(1)), {}
        else:
            r0 = 1 << (int(R0_NUMEL.search(source).group(1)) - 1).bit_length()
            if r0 > MAX_R0_BLOCK:
                return None
            blocks = {"R0_BLOCK": r0}
        x = max(1, 1024 // r0)
        if "YBLOCK" in signature:  # a tiled reduction
            blocks["YBLOCK"] = 1
        return {"XBLOCK": x, **blocks}, x * r0
    blocks = {k: v for k, v in (BLOCKS_2D if "YBLOCK" in signature else BLOCKS_1D).items() if k in signature}
    elements = 1
    for v in blocks.values():
        elements *= v
    return blocks, elements


@dataclass
class KernelSass:
    instructions: int  # static SASS instructions
    elements_per_thread: float

    @property
    def per_element(self) -> float:
        return self.instructions / self.elements_per_thread


def _load_kernel(name: str, source: str, workdir: str):
    """The kernel's JITFunction and the signature its decorator names; None for other kinds (templates).
    Triton reads a kernel's source from its file, so the module is written to one."""
    import torch._inductor.runtime.triton_heuristics as heuristics

    kind = next((k for k in KINDS if f"@triton_heuristics.{k}(" in source), None)
    if kind is None:
        return None
    meta: dict = {}
    path = Path(workdir) / f"{name}.py"
    path.write_text(source.replace("triton_helpers.set_driver_to_gpu()", ""))  # it asks for a live GPU
    real = getattr(heuristics, kind)
    setattr(heuristics, kind, lambda **kw: (meta.update(kw), lambda fn: fn)[1])
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        setattr(heuristics, kind, real)
    return getattr(module, name), meta["triton_meta"]["signature"]


def compile_sass(name: str, source: str, cc: int = 90) -> KernelSass | None:
    """The kernel compiled for compute capability `cc` with representative block sizes; None for a template or
    a reduction too long to compile straight-line."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    with tempfile.TemporaryDirectory() as workdir:
        loaded = _load_kernel(name, source, workdir)
        if loaded is None:
            return None
        fn, signature = loaded
        sizes = block_sizes(signature, source)
        if sizes is None:
            return None
        blocks, elements = sizes
        compiled = triton.compile(ASTSource(fn, signature=signature, constexprs=blocks),
                                  target=GPUTarget("cuda", cc, THREADS_PER_WARP), options={"num_warps": NUM_WARPS})
        sass = compiled.asm["sass"]
    instructions = sum(1 for line in sass.splitlines() if "\t" in line and line.rstrip().endswith(";"))
    return KernelSass(instructions, elements / (NUM_WARPS * THREADS_PER_WARP))


def _compile_one(item: tuple[str, str]) -> KernelSass | None:
    try:
        return compile_sass(*item)
    except Exception as e:  # one kernel Triton cannot build here should not lose the rest
        print(f"  {item[0]}: not compiled ({type(e).__name__}: {str(e).splitlines()[0][:100]})", file=sys.stderr)
        return None


def analyse(lines: list[str], sources: dict[str, str], sass: dict[str, KernelSass], clock_ghz: float, sms: int,
            bandwidth_tbs: float) -> dict:
    """Per Triton kernel (sources: kernel_sources(lines)), summed over its launches: the memory floor (ms) and,
    where compiled, the issue floor."""
    issue_rate = clock_ghz * 1e9 * sms * SUBPARTITIONS_PER_SM * THREADS_PER_WARP  # thread-instructions / s
    rows: dict[str, dict] = {}
    for line in lines:
        m = LAUNCH.match(line.strip())
        if not m:
            continue
        k = sass.get(m.group(1))
        n = numel(m.group(3).split("stream=")[0])
        row = rows.setdefault(m.group(1), dict(launches=0, elements=0, memory_ms=0.0, bytes_known=False,
                                               per_element=k.per_element if k else None, issue_ms=0.0 if k else None))
        row["launches"] += 1
        row["elements"] += n
        gb = traffic_gb(sources[m.group(1)])
        row["memory_ms"] += (gb or 0.0) / bandwidth_tbs  # GB / (TB/s) = ms
        row["bytes_known"] |= gb is not None
        if k:
            row["issue_ms"] += n * k.per_element / issue_rate * 1e3
    return rows


def report(name: str, rows: dict, top: int) -> str:
    compiled = {k: r for k, r in rows.items() if r["issue_ms"] is not None}
    rest = {k: r for k, r in rows.items() if r["issue_ms"] is None}
    issue = sum(r["issue_ms"] for r in compiled.values())
    head = f"{name}: {sum(r['launches'] for r in compiled.values())} launches compiled: "
    tail = f"{sum(r['launches'] for r in rest.values())} launches not compiled (templates, long reductions)"
    # a GPU run's TORCH_LOGS=output_code has no byte estimates: inductor writes them only when benchmarking kernels
    with_bytes = any(r["bytes_known"] for r in rows.values())
    if with_bytes:
        memory = sum(r["memory_ms"] for r in compiled.values())
        floor = sum(max(r["issue_ms"], r["memory_ms"]) for r in compiled.values())
        bound = sum(r["issue_ms"] > r["memory_ms"] for r in compiled.values())
        out = [f"{head}memory floor {memory:.2f} ms, issue floor {issue:.2f} ms, the larger of the two per kernel "
               f"{floor:.2f} ms; {bound} kernel(s) issue-bound, {floor - memory:.2f} ms over their memory floor. {tail}: "
               f"memory floor {sum(r['memory_ms'] for r in rest.values()):.2f} ms"]
    else:
        out = [f"{head}issue floor {issue:.2f} ms (no byte estimates in this log, so no memory floor). {tail}"]
    out.append(f"  {'instr/elem':>10s} {'issue ms':>8s}" + (f" {'memory ms':>9s}" if with_bytes else "")
               + f" {'launches':>8s}  kernel")
    # by issue floor over memory floor (the memory floor is 0 without byte estimates: by issue floor)
    for k, r in sorted(compiled.items(), key=lambda kv: kv[1]["memory_ms"] - kv[1]["issue_ms"])[:top]:
        out.append(f"  {r['per_element']:10.1f} {r['issue_ms']:8.3f}" + (f" {r['memory_ms']:9.3f}" if with_bytes else "")
                   + f" {r['launches']:8d}  {k}")
    return "\n".join(out)


def analyse_log(log: str, clock_ghz: float = 1.98, sms: int = 132, bandwidth_tbs: float = 3.02,
                jobs: int = 2) -> dict[str, dict]:
    """AOT ID ('1_backward', ...) -> analyse()'s rows, for each module in an output_code log."""
    results = {}
    for g in split_graphs(log):
        sources = kernel_sources(g.lines)
        with ProcessPoolExecutor(jobs) as pool:
            compiled = dict(zip(sources, pool.map(_compile_one, sources.items())))
        results[g.name] = analyse(g.lines, sources, {k: v for k, v in compiled.items() if v is not None}, clock_ghz,
                                  sms, bandwidth_tbs)
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="TORCH_LOGS=output_code logs (or benchmarks/gpu_codegen.py --out files)")
    p.add_argument("--clock-ghz", type=float, default=1.98, help="SM clock (the H100 SXM's maximum)")
    p.add_argument("--sms", type=int, default=132, help="streaming multiprocessors (H100 SXM)")
    p.add_argument("--bandwidth-tbs", type=float, default=3.02, help="copy bandwidth (session 14's H100)")
    p.add_argument("--top", type=int, default=12, help="kernels listed per graph, by issue floor over memory floor")
    p.add_argument("--jobs", type=int, default=2, help="kernels compiled at once")
    a = p.parse_args(argv)
    results = {}
    for path in a.logs:
        for graph, rows in analyse_log(Path(path).read_text(errors="replace"), a.clock_ghz, a.sms, a.bandwidth_tbs,
                                       a.jobs).items():
            print(report(f"{path} {graph}", rows, a.top))
            results[(path, graph)] = rows
    return results


if __name__ == "__main__":
    main()
