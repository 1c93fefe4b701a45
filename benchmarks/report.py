"""The markdown tables of one benchmark run (no conclusions: those go in the README)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table, right-aligned but for its first column."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *[[_cell(cell) for cell in row] for row in rows]]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


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
    fastest: dict[str, dict] = {}
    for run in results["extraction"]["runs"]:
        best = fastest.get(run["precision"])
        if best is None or images_per_second(run) > images_per_second(best):
            fastest[run["precision"]] = run
    return {precision: run["batch"] for precision, run in fastest.items()}


def machine_section(results: dict) -> str:
    facts = results["machine"]
    rows = [[name, value] for name, value in facts.items() if name not in ("flags", "versions")]
    rows += [[f"CPU flag {flag}", present] for flag, present in facts["flags"].items()]
    rows += [[name, version] for name, version in facts["versions"].items()]
    blas = [["this process", *info.values()] for info in results["blas"]]
    blas += [["matmul child", *info.values()] for info in results["matmul"].get("blas", [])]
    return "\n\n".join(
        [
            "## Machine",
            table(["", ""], rows),
            table(["process", "library", "API", "kernel", "threads"], blas),
        ]
    )


def search_section(results: dict) -> str:
    rows = []
    for row in results["search"]:
        original, project, bare = row["original"], row["project"], row["bare"]
        scaled = " *" if row["queries_timed"] < row["n"] else ""
        rows.append(
            [
                row["n"],
                spread(original) + scaled,
                spread(project),
                spread(bare),
                f"{original['median'] / project['median']:.1f}x",
                f"{project['median'] / bare['median']:.2f}x",
                row["same_distances"],
            ]
        )
    d, rounds = results["search"][0]["d"], results["plan"]["rounds"]
    header = ["n", "original loop (s)", "`nearest_distinct_neighbours` (s)"]
    header += ["bare `IndexFlatL2` add + search (s)", "original / project"]
    header += ["project / bare", "same distances as bare"]
    return "\n\n".join(
        [
            f"## 1. Search: n x {d:,} float32, interleaved, {rounds} rounds, median (range)",
            table(header, rows),
            f"\\* the original loop timed on the first {results['plan']['max_queries']:,} "
            "queries, scaled to n by its number of `index.search` calls",
        ]
    )


def matmul_section(results: dict) -> str:
    matmul = results["matmul"]
    if "error" in matmul:
        return f"## 2. Matrix-multiply limit\n\nfailed: {matmul['error']}"
    size = results["plan"]["matmul_size"]
    rows = [[name, rate["precision"], rate["gflops"]] for name, rate in matmul["rates"].items()]
    rows += [[f"**limit, {p}**", p, gflops] for p, gflops in limits(results).items()]
    heading = (
        f"## 2. Matrix-multiply limit: {size:,} x {size:,}, fastest call, "
        "fresh process without OPENBLAS_CORETYPE (the fastest kernel this machine has)"
    )
    return f"{heading}\n\n" + table(["product", "precision", "GFLOP/s"], rows)


def extraction_section(results: dict) -> str:
    extraction, best = results["extraction"], limits(results)
    gflop = extraction["gflop_per_image"]
    rows = []
    for run in extraction["runs"]:
        rate = images_per_second(run)
        fraction = rate * gflop / best[run["precision"]] if run["precision"] in best else "-"
        label = run["precision"] + (" (auto)" if run["precision"] == extraction["auto"] else "")
        rows.append([label, run["batch"], spread(run), rate, rate * gflop, fraction])
    header = ["precision", "batch", "seconds per batch", "images/s", "GFLOP/s"]
    header += ["of the limit, same precision"]
    fastest = fastest_batches(results)
    rates = {
        precision: images_per_second(
            next(r for r in extraction["runs"] if (r["precision"], r["batch"]) == (precision, b))
        )
        for precision, b in fastest.items()
    }
    summary_rows = [
        [p, fastest[p], rates[p], rates[p] / rates["float32"], p == extraction["auto"]]
        for p in fastest
    ]
    size = results["plan"]["image_size"]
    return "\n\n".join(
        [
            f"## 3. Extraction: VGG16 to block5_conv3, {size} x {size}, {gflop:.2f} GFLOP/image",
            table(header, rows),
            table(["precision", "fastest batch", "images/s", "vs float32", "auto"], summary_rows),
        ]
    )


def fidelity_section(results: dict) -> str:
    header = ["set", "images", "median relative feature difference", "Spearman"]
    header += ["top-N identical", "same exact-duplicate groups", "same near-duplicate pairs"]
    header += ["largest distance change", "smallest top-N gap"]
    keys = ["images", "median_relative_difference", "spearman", "top_n_identical", "same_copies"]
    keys += ["same_near_duplicates", "largest_distance_change", "smallest_top_gap"]
    rows = [[name, *(row[key] for key in keys)] for name, row in results["fidelity"].items()]
    top_n = next(iter(results["fidelity"].values()))["top_n"]
    return "\n\n".join(
        [
            f"## 4. Fidelity: bfloat16 against float32, random weights, N = {top_n}",
            table(header, rows),
            "distance change and gap: fractions of the median nearest-neighbour distance",
        ]
    )


def memory_section(results: dict) -> str:
    rows = []
    for way, row in results["memory"].items():
        if "error" in row:
            rows.append([way, "-", "-", "-", f"failed: {row['error']}"])
            continue
        above = row["peak_mib"] - row["baseline_mib"]
        rows.append([way, row["images"], row["peak_mib"], above, row["seconds"]])
    header = ["way", "images", "peak RSS (MiB)", "above the model (MiB)", "seconds"]
    return "## 5. Memory: each way in a fresh process\n\n" + table(header, rows)


def render(results: dict, quick: bool = False) -> str:
    """The whole report."""
    sections = [
        f"# Benchmarks, {results['date']}" + (" (QUICK RUN: tiny sizes)" if quick else ""),
        machine_section(results),
        search_section(results),
        matmul_section(results),
        extraction_section(results),
        fidelity_section(results),
        memory_section(results),
    ]
    return "\n\n".join(sections) + "\n"
