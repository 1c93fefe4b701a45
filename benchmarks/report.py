"""The markdown tables of one benchmark run (no conclusions: those go in docs/performance.md)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table, right-aligned but for its first column."""
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *map(_cells, rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _cells(row: list) -> list[str]:
    def cell(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    return [cell(value) for value in row]


def section(heading: str, *parts: str) -> str:
    return "\n\n".join([f"## {heading}", *parts])


def spread(timing: dict) -> str:
    """``median (fastest-slowest)`` of a :func:`common.summary`, in seconds."""
    return f"{timing['median']:.2f} ({timing['min']:.2f}-{timing['max']:.2f})"


def limits(results: dict) -> dict[str, float]:
    """Fastest matrix multiply per precision, GFLOP/s."""
    best: dict[str, float] = {}
    for rate in results["matmul"].get("rates", {}).values():
        best[rate["precision"]] = max(best.get(rate["precision"], 0.0), rate["gflops"])
    return best


def images_per_second(run: dict) -> float:
    return run["batch"] / run["median"]


def fastest_batches(results: dict) -> dict[str, int]:
    """The batch size with the most images/s (median), per precision."""
    fastest = {}
    for run in sorted(results["extraction"]["runs"], key=images_per_second):
        fastest[run["precision"]] = run["batch"]  # the fastest comes last
    return fastest


def machine_section(results: dict) -> str:
    facts = results["machine"]
    rows = [[name, value] for name, value in facts.items() if name not in ("flags", "versions")]
    rows += [[f"CPU flag {flag}", present] for flag, present in facts["flags"].items()]
    rows += [[name, version] for name, version in facts["versions"].items()]
    blas = [["this process", *info.values()] for info in results["blas"]]
    blas += [["matmul child", *info.values()] for info in results["matmul"].get("blas", [])]
    header = ["process", "library", "API", "kernel", "threads"]
    return section("Machine", table(["", ""], rows), table(header, blas))


def search_section(results: dict) -> str:
    rows = [
        [
            row["n"],
            spread(row["original"]) + (" *" if row["queries_timed"] < row["n"] else ""),
            spread(row["project"]),
            spread(row["bare"]),
            f"{row['original']['median'] / row['project']['median']:.1f}x",
            f"{row['project']['median'] / row['bare']['median']:.2f}x",
            row["same_distances"],
        ]
        for row in results["search"]
    ]
    header = ["n", "original loop (s)", "`nearest_distinct_neighbours` (s)"]
    header += ["bare `IndexFlatL2` add + search (s)", "original / project", "project / bare"]
    d, plan = results["search"][0]["d"], results["plan"]
    return section(
        f"1. Search: n x {d:,} float32, interleaved, {plan['rounds']} rounds, median (range)",
        table([*header, "same distances as bare"], rows),
        f"\\* the original loop timed on the first {plan['max_queries']:,} queries, "
        "scaled to n by its number of `index.search` calls",
    )


def matmul_section(results: dict) -> str:
    size, matmul = results["plan"]["matmul_size"], results["matmul"]
    heading = (
        f"2. Matrix-multiply limit: {size:,} x {size:,}, fastest call, "
        "fresh process without OPENBLAS_CORETYPE (the fastest kernel this machine has)"
    )
    if "error" in matmul:
        return section(heading, f"failed: {matmul['error']}")
    rows = [[name, rate["precision"], rate["gflops"]] for name, rate in matmul["rates"].items()]
    rows += [[f"**limit, {p}**", p, gflops] for p, gflops in limits(results).items()]
    return section(heading, table(["product", "precision", "GFLOP/s"], rows))


def extraction_section(results: dict) -> str:
    extraction, best, fastest = results["extraction"], limits(results), fastest_batches(results)
    gflop, rows, summary_rows = extraction["gflop_per_image"], [], []
    for run in extraction["runs"]:
        rate, precision = images_per_second(run), run["precision"]
        fraction = rate * gflop / best[precision] if precision in best else "-"
        label = precision + (" (auto)" if precision == extraction["auto"] else "")
        rows.append([label, run["batch"], spread(run), rate, rate * gflop, fraction])
        if run["batch"] == fastest[precision]:
            summary_rows.append([label, run["batch"], rate])
    summary_rows = [[*row, row[2] / summary_rows[0][2]] for row in summary_rows]  # float32 first
    header = ["precision", "batch", "seconds per batch", "images/s", "GFLOP/s"]
    size = results["plan"]["image_size"]
    return section(
        f"3. Extraction: VGG16 to block5_conv3, {size} x {size}, {gflop:.2f} GFLOP/image",
        table([*header, "of the limit, same precision"], rows),
        table(["precision", "fastest batch", "images/s", "vs float32"], summary_rows),
    )


def fidelity_section(results: dict) -> str:
    header = ["set", "images", "median relative feature difference", "Spearman"]
    header += ["top-N identical", "same exact-duplicate groups", "same near-duplicate pairs"]
    keys = ["images", "median_relative_difference", "spearman", "top_n_identical", "same_copies"]
    keys += ["same_near_duplicates", "largest_distance_change", "smallest_top_gap"]
    rows = [[name, *(row[key] for key in keys)] for name, row in results["fidelity"].items()]
    top_n = next(iter(results["fidelity"].values()))["top_n"]
    auto_rows = [
        [name, len(row["close_calls"]), row["auto_uses"], row["auto_top_n_identical"]]
        for name, row in results["fidelity"].items()
    ]
    auto_header = ["set", "close calls in bfloat16", 'PRECISION "auto" ends in']
    return section(
        f"4. Fidelity: bfloat16 against float32, random weights, N = {top_n}",
        table([*header, "largest distance change", "smallest top-N gap"], rows),
        "distance change and gap: fractions of the median nearest-neighbour distance",
        table([*auto_header, "top-N identical to float32"], auto_rows),
        "close calls: top-N neighbours or near-duplicate distances within "
        f"{next(iter(results['fidelity'].values()))['close_call_margin']} x the median "
        "(snowflake_tools.fidelity); with any, "
        '"auto" computes the ranking again in float32',
    )


def memory_section(results: dict) -> str:
    rows = [
        [way, "failed", row["error"]]
        if "error" in row
        else [way, row["images"], row["peak_mib"], row["peak_mib"] - row["baseline_mib"]]
        + [row["seconds"]]
        for way, row in results["memory"].items()
    ]
    header = ["way", "images", "peak RSS (MiB)", "above the model (MiB)", "seconds"]
    return section("5. Memory: each way in a fresh process", table(header, rows))


def render(results: dict, quick: bool = False) -> str:
    """The whole report."""
    title = f"# Benchmarks, {results['date']}" + (" (QUICK RUN: tiny sizes)" if quick else "")
    sections = [machine_section, search_section, matmul_section, extraction_section]
    sections += [fidelity_section, memory_section]
    return "\n\n".join([title, *(make(results) for make in sections)]) + "\n"
