"""Where runs ran: kernel and virtualization, for every table and plot.

Numbers from different kernels compare kernels as well as transports, and numbers from
an emulated CPU (a TCG guest) show correctness and relative cost, never speed. So a
table that mixes kernels keeps them apart (each transport spec gains a `kernel=`
setting, and `vm=tcg` when emulated runs sit beside others) and says so, and every
footer and warning list names emulated runs.
"""

from __future__ import annotations

from collections import Counter

import pandas

from transports.spec import Spec

EMULATED = "emulated CPU (TCG): timings show correctness and relative cost, not speed"


def _values(runs: pandas.DataFrame, column: str) -> Counter[str]:
    if column not in runs:
        return Counter()
    return Counter(str(v) for v in runs.drop_duplicates("file")[column].dropna())


def _virtualization(runs: pandas.DataFrame) -> pandas.Series:
    if "virtualization" not in runs:
        return pandas.Series("none", index=runs.index)
    return runs["virtualization"].fillna("none").astype(str)


def series_by_kernel(runs: pandas.DataFrame) -> pandas.DataFrame:
    """`runs` with kernel (and tcg) folded into transport_spec and transport_label when
    they vary, so that every comparison, report and plot groups by them."""
    kernels = _values(runs, "kernel")
    virt = _virtualization(runs)
    mixed_virt = virt.nunique() > 1
    if len(kernels) <= 1 and not mixed_virt:
        return runs
    runs = runs.copy()

    def spec(row_spec: str, kernel: object, vm: str) -> str:
        extra = []
        if len(kernels) > 1:
            extra.append(f"kernel={kernel}")
        if mixed_virt and vm != "none":
            extra.append(f"vm={vm}")
        read = Spec.read(row_spec)
        return Spec(read.name, read.given + tuple(tuple(e.split("=", 1)) for e in extra)).text

    for column in ("transport_spec", "transport_label"):
        if column in runs:
            runs[column] = [
                spec(s, k, v) for s, k, v in zip(runs[column], runs["kernel"], virt, strict=True)
            ]
    return runs


def footer_note(runs: pandas.DataFrame) -> str:
    """` · EMULATED ...` when any run was emulated; empty otherwise."""
    virt = _virtualization(runs.drop_duplicates("file") if "file" in runs else runs)
    tcg = int((virt == "tcg").sum())
    if not tcg:
        return ""
    share = "all runs" if tcg == len(virt) else f"{tcg} of {len(virt)} runs"
    return f" · EMULATED ({share}: {EMULATED})"


def warnings(table: pandas.DataFrame) -> list[str]:
    out = []
    kernels = _values(table, "kernel")
    if len(kernels) > 1:
        listed = ", ".join(f"{k} ({n} runs)" for k, n in kernels.most_common())
        out.append(
            f"this table mixes kernels: {listed}; each transport is shown per kernel "
            "(kernel=...), and a ratio across kernels measures the kernels too"
        )
    virt = _virtualization(table.drop_duplicates("file") if "file" in table else table)
    tcg = int((virt == "tcg").sum())
    if tcg:
        qemu = _values(table, "qemu_version")
        which = "all" if tcg == len(virt) else f"{tcg} of {len(virt)}"
        out.append(
            f"{which} runs ran in a guest on an {EMULATED}"
            + (f" (qemu {', '.join(qemu)})" if qemu else "")
        )
    return out
