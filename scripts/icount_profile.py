#!/usr/bin/env python3
"""Executed aarch64 instructions per function, from qemu-user execution logs.

    icount_profile.py BINARY LOG_A RUNS_A LOG_B RUNS_B

LOG_A and LOG_B are `qemu-aarch64 -d page,in_asm,exec,nochain` logs of BINARY
run RUNS_A and RUNS_B times (RUNS_B > RUNS_A). Every translated block's
instruction count (from `in_asm`) is multiplied by its executions (the `Trace`
lines of `exec`, one per execution with `nochain`) and attributed to the
function symbol that contains its first instruction (`nm`; the load address
is `start_code` from `page`). The difference between the two logs, divided by
RUNS_B - RUNS_A, leaves out start-up and is the per-run cost of each function.
With the generated model, each `layer_N_...` function is one layer of the
network (kernels inline into it unless they carry their own symbol, as the
x86 feature-specific variants and some shared kernels do).

Scripts/icount.sh's `profile` mode runs it; it prints a table, largest first.
"""

import bisect
import collections
import re
import subprocess
import sys

TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def symbols(binary):
    """Sorted (offset, name) of the binary's text symbols (demangled)."""
    out = subprocess.run(
        ["nm", "-C", "--defined-only", binary], capture_output=True, text=True, check=True
    ).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW" and not parts[2].startswith("$"):
            syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    return syms


def per_function(log, syms):
    """Executed instructions per function name over the whole log."""
    sizes = {}  # block start address -> instructions
    execs = collections.Counter()
    base = None
    block = None
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("IN:"):
                block = None
            elif line.startswith("0x") and ":  " in line[:24]:
                addr = int(line.split(":", 1)[0], 16)
                if block is None:
                    block = addr
                    sizes[block] = 0
                sizes[block] += 1
            elif line.startswith("Trace"):
                block = None
                m = TRACE.match(line)
                if m:
                    execs[int(m.group(1), 16)] += 1
            elif line.startswith("start_code"):
                base = int(line.split()[1], 16)
    if base is None:
        sys.exit(f"icount_profile: no start_code line in {log} (run qemu with -d page)")
    offsets = [s[0] for s in syms]
    total = collections.Counter()
    for addr, n in execs.items():
        i = bisect.bisect_right(offsets, addr - base) - 1
        name = syms[i][1] if i >= 0 and addr >= base else "(outside the binary)"
        total[name] += n * sizes.get(addr, 0)
    return total


def short(name):
    """The model's layers and the runtime's kernels without their crate path."""
    for prefix in ("derm_runtime::model::generated::", "derm_runtime::"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    binary, log_a, runs_a, log_b, runs_b = sys.argv[1:]
    runs = int(runs_b) - int(runs_a)
    if runs <= 0:
        sys.exit("icount_profile: RUNS_B must exceed RUNS_A")
    syms = symbols(binary)
    a, b = per_function(log_a, syms), per_function(log_b, syms)
    rows = []
    for name in set(a) | set(b):
        d = (b[name] - a[name]) / runs
        if d > 0:
            rows.append((d, name))
    rows.sort(reverse=True)
    total = sum(d for d, _ in rows)
    print(f"{'instructions':>12} {'share':>6}  function")
    for d, name in rows:
        if d < total * 1e-4:
            break
        print(f"{d:12,.0f} {100 * d / total:5.1f}%  {short(name)}")
    print(f"{total:12,.0f} 100.0%  total per run")


if __name__ == "__main__":
    main()
