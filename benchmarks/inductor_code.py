"""What inductor's generated CUDA code for a compiled step launches, read from a TORCH_LOGS=output_code log.

    TORCH_LOGS=output_code python benchmarks/throughput.py ... --compile > warm.log 2>&1
    python benchmarks/inductor_code.py warm.log

For each graph inductor compiled (AOT ID: the training forward and backward, the no-grad forward), the
launches of one call: Triton kernels by kind (pointwise, reduction, persistent reduction, template),
library kernels (extern_kernels: convolutions, matrix products) and ATen fallbacks (eager dropout,
attention, convolution_backward), and the **transposing** kernels: tiled pointwise kernels that load along
one index and store along the other, i.e. copy a tensor between memory formats (NHWC <-> NCHW). In session
11's code for the mnist step with forced channels-last layouts, the backward held 68 of them, most named
after native_group_norm_backward, whose decomposition reshapes its input to (N, G, C/G, HW) and so hands
its gradient on in NCHW memory. The log's kernel sources tell which; the element counts (xnumel * ynumel)
are per launch. Where the code was generated under inductor's profile_bandwidth (benchmarks/gpu_codegen.py
always sets it; it changes no kernel), each kernel carries inductor's estimate of the bytes it moves, and
the report adds them up per graph and lists the kernels that move the most. Reading the code needs no GPU,
so the logs that gpu.sh keeps can be read here.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field

MARK = "[__output_code] "
KINDS = {"poi": "pointwise", "red": "reduction", "per": "persistent reduction", "tem": "template"}
LAUNCH = re.compile(r"^(triton_(poi|red|per|tem)_\w+?)\.run\((.*)\)$")
LIBRARY = re.compile(r"\bextern_kernels\.(\w+)\(")
FALLBACK = re.compile(r"\btorch\.ops\.aten\.(\w+)(?:\.\w+)?\(")
STORE = re.compile(r"tl\.store\(\w+ \+ \(([^)]*)\)")
LOAD = re.compile(r"tl\.load\(\w+ \+ \(([^)]*)\)")
NUM_GB = re.compile(r"'kernel_num_gb': ([0-9.eE+-]+)")


@dataclass
class GraphCode:
    name: str
    lines: list[str] = field(default_factory=list)


def split_graphs(log: str) -> list[GraphCode]:
    """The generated modules in a log, in order, each named by its AOT ID line ('1_backward', ...)."""
    graphs: list[GraphCode] = []
    for line in log.splitlines():
        if MARK not in line:
            continue
        code = line.split(MARK, 1)[1]
        m = re.match(r"# AOT ID: \['([^']*)'\]", code)
        if m:
            graphs.append(GraphCode(m.group(1)))
        elif graphs and not code.startswith("Output code written to"):
            graphs[-1].lines.append(code)
    return graphs


def kernel_sources(lines: list[str]) -> dict[str, str]:
    """name -> Triton source of every kernel defined in a module (`name = async_compile.triton(...)`)."""
    sources, name, body = {}, None, []
    for line in lines:
        m = re.match(r"^(\w+) = async_compile\.triton\(", line)
        if m:
            name, body = m.group(1), []
        elif name and line.startswith("''', device_str"):
            sources[name], name = "\n".join(body), None
        elif name:
            body.append(line)
    return sources


def unit_stride_index(index: str) -> str | None:
    """'x' or 'y' where an address expression starts with a bare index variable (its unit-stride dimension)."""
    m = re.match(r"([xy])\d+ \+", index.strip())
    return m.group(1) if m else None


def is_transposing(source: str) -> bool:
    """A tiled (x, y) pointwise kernel whose loads and stores run along different indices: a layout copy."""
    if "ynumel" not in source:
        return False
    loads = {unit_stride_index(i) for i in LOAD.findall(source)} - {None}
    stores = {unit_stride_index(i) for i in STORE.findall(source)} - {None}
    return bool(stores and loads and stores != loads)


def numel(args: str) -> int:
    """xnumel * ynumel (or * r numel) of a launch: the product of its bare integer arguments."""
    n = 1
    for a in args.split(","):
        a = a.strip()
        if a.isdigit():
            n *= int(a)
    return n


def ops_of(kernel: str) -> str:
    """The ATen ops a kernel's name lists (triton_poi_fused_native_group_norm_silu_6 -> native_group_norm_silu)."""
    return re.sub(r"_\d+$", "", re.sub(r"^triton_(poi|red|per|tem)_(fused_)?", "", kernel))


def traffic_gb(source: str) -> float | None:
    """Inductor's estimate of what one launch reads and writes, in GB: each buffer argument's elements
    once, a slice counted as its slices. Written into the source only under profile_bandwidth (or
    benchmark_kernel); a looped reduction's second read of its input is not counted."""
    m = NUM_GB.search(source)
    return float(m.group(1)) if m else None


def summarise(graph: GraphCode) -> dict:
    sources = kernel_sources(graph.lines)
    transposing = {name for name, source in sources.items() if is_transposing(source)}
    gb = {name: traffic_gb(source) for name, source in sources.items()}
    triton, library, fallback, transposes = Counter(), Counter(), Counter(), Counter()
    launches, traffic, transposed_elements = Counter(), Counter(), 0
    for line in graph.lines:
        s = line.strip()
        if s.startswith("#"):
            continue
        m = LAUNCH.match(s)
        if m:
            kernel, ops = m.group(1), ops_of(m.group(1))
            triton[KINDS[m.group(2)]] += 1
            launches[ops] += 1
            if gb.get(kernel) is not None:
                traffic[ops] += gb[kernel]
            if kernel in transposing:
                transposes[ops] += 1
                transposed_elements += numel(m.group(3).split("stream=")[0])
            continue
        m = LIBRARY.search(s)
        if m:
            library[m.group(1)] += 1
            continue
        m = FALLBACK.search(s)
        if m:
            fallback[m.group(1)] += 1
    return dict(name=graph.name, triton=triton, library=library, fallback=fallback, transposes=transposes,
                transposed_elements=transposed_elements, launches=launches, traffic=traffic)


def report(summaries: list[dict], top: int = 6) -> str:
    out = []
    for s in summaries:
        n_tr = sum(s["transposes"].values())
        out.append(f"{s['name']}: {sum(s['triton'].values())} Triton launches ({', '.join(f'{v} {k}' for k, v in s['triton'].most_common())}), "
                   f"{sum(s['library'].values())} library ({', '.join(f'{v} {k}' for k, v in s['library'].most_common())}), "
                   f"{sum(s['fallback'].values())} ATen fallbacks ({', '.join(f'{v} {k}' for k, v in s['fallback'].most_common())})")
        out.append(f"  transposing (layout-copying) launches: {n_tr}, {s['transposed_elements'] / 1e6:.0f}M elements")
        for ops, v in s["transposes"].most_common(top):
            out.append(f"    {v:4d}  {ops}")
        if s["traffic"]:
            out.append(f"  Triton kernels' traffic (inductor's estimate): {sum(s['traffic'].values()):.2f} GB; largest, GB:")
            for ops, v in s["traffic"].most_common(top):
                out.append(f"    {v:6.3f}  {s['launches'][ops]:3d} x {ops}")
    if sum(1 for s in summaries if s["traffic"]) > 1:
        out.append(f"Triton kernels' traffic, all graphs: {sum(sum(s['traffic'].values()) for s in summaries):.2f} GB")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="logs written with TORCH_LOGS=output_code")
    p.add_argument("--top", type=int, default=6, help="transposing kernels, and kernels by traffic, listed per graph")
    a = p.parse_args(argv)
    summaries = []
    for path in a.logs:
        with open(path, errors="replace") as f:
            graphs = split_graphs(f.read())
        found = [summarise(g) for g in graphs]
        print(f"== {path}: {len(graphs)} generated module(s)")
        if found:
            print(report(found, a.top))
        summaries += found
    return summaries


if __name__ == "__main__":
    main()
