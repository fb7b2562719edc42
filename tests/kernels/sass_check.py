"""A check on sm_90 SASS (nvdisasm's listing) for kernels that hand the wgmma its A operand in registers: no register
that an in-flight HGMMA reads as A may be written before the WARPGROUP.DEPBAR that retires it, on any control-flow
path. PTX leaves such a write undefined and ptxas does not warn; the first register form of the INT4 wgmma tile had
it and gave wrong sums on the GPU (2026-12-07)."""
import re

# opcode families that write no general register (stores, barriers, branches, TMA, fences)
_NO_DEST = {"ST", "STS", "STG", "STL", "BAR", "BRA", "DEPBAR", "WARPGROUP", "MEMBAR", "FENCE", "NOP", "EXIT", "RED",
            "SYNCS", "BSYNC", "BSSY", "CCTL", "ERRBAR", "WARPSYNC", "RET", "CALL", "HGMMA"}


def parse(sass: str):
    """-> (instructions, {label: index of the instruction after it})"""
    ins, labels = [], {}
    for line in sass.splitlines():
        m = re.match(r"\s*(\.L\w+):", line)
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m:
            ins.append(m.group(1))
    return ins, labels


def written(instr: str) -> set[int]:
    """General registers an instruction writes (its first operand, 1, 2 or 4 wide by the opcode's suffixes)."""
    body = re.sub(r"^@!?U?P\w+\s+", "", instr)
    op = body.split()[0]
    family = op.split(".")[0]
    if family in _NO_DEST or family.startswith("U"):  # uniform-datapath instructions write uniform registers
        return set()
    m = re.match(r"\S+\s+R(\d+)\b", body)
    if not m:
        return set()
    if ".128" in op or op.endswith(".4"):
        width = 4
    elif ".64" in op or ".WIDE" in op or op.endswith(".2"):
        width = 2
    else:
        width = 1
    return set(range(int(m.group(1)), int(m.group(1)) + width))


def _successors(ins, labels, pc):
    m = re.search(r"\bBRA\s+`?\(?(\.L\w+)", ins[pc])
    if m:
        return [labels[m.group(1)]] + ([pc + 1] if ins[pc].startswith("@") else [])
    if re.search(r"\bEXIT\b", ins[pc]) and not ins[pc].startswith("@"):
        return []
    return [pc + 1] if pc + 1 < len(ins) else []


def register_a_races(sass: str):
    """-> (number of HGMMA groups reading A from registers, [(group's first instruction, offending instruction,
    registers)]). A group is a run of HGMMAs closed by one with gsb0; it is retired by a `WARPGROUP.DEPBAR.LE gsb0, n`
    reached after at least n later groups were issued."""
    ins, labels = parse(sass)
    groups, races = 0, []
    for pc, instr in enumerate(ins):
        if not ("HGMMA" in instr and "gsb0" in instr):
            continue
        start = pc
        while start > 0 and "HGMMA" in ins[start - 1] and "gsb0" not in ins[start - 1]:
            start -= 1
        a_regs = set()
        for j in range(start, pc + 1):
            m = re.search(r"HGMMA\S*\s+R\d+,\s+R(\d+),", ins[j])
            if m:
                a_regs |= set(range(int(m.group(1)), int(m.group(1)) + 4))
        if not a_regs:
            continue
        groups += 1
        seen, stack = set(), [(q, 0) for q in _successors(ins, labels, pc)]
        while stack:
            q, later = stack.pop()
            if (q, later) in seen:
                continue
            seen.add((q, later))
            m = re.search(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s+0x([0-9a-f]+)", ins[q])
            if m and later >= int(m.group(1), 16):
                continue  # retired on this path
            if "HGMMA" in ins[q] and "gsb0" in ins[q]:
                later = min(later + 1, 4)
            hit = written(ins[q]) & a_regs
            if hit:
                races.append((ins[start], ins[q], sorted(hit)))
            stack += [(s, later) for s in _successors(ins, labels, q)]
    return groups, races
