#!/usr/bin/env python3
"""Issue 20's two layout targets for src/, checked on every CI run (scripts/test.sh):

  1. No function over 80 lines (from its `fn` line to its closing brace, test code included),
     except declarative tables.
  2. No import circles: no two sibling modules (files or directories under the same parent,
     the crate root included) whose code reaches into each other. A module reaching into its
     own parent or child is the module tree, not a circle. Edges are `use` trees and inline
     `crate::`/`super::`/`self::` paths outside `#[cfg(test)]` items; comments (doc links
     included) are not imports.

Exceptions live in scripts/structure-allowlist.txt, one per line with the reason:
    fn   src/path.rs:name  LINES  reason   (may not grow past LINES)
    cycle a::b c::d               reason   (the two sibling modules, in any order)
An entry that no longer matches a violation fails the check too, so the list only shrinks.

Reads files with a small lexer (comments, strings, raw strings and char literals blanked) and
counts braces: no Rust parser, no dependency beyond python3, well under a second.
usage: scripts/check-structure.py [--list]   (--list: print every function over 60 lines)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
ALLOWLIST = ROOT / "scripts" / "structure-allowlist.txt"
MAX_LINES = 80
RAW = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"'(\\(x..|u\{[^}]*\}|.)|[^\\'])'")


def blank(text):
    """The text with comments and literal contents replaced by spaces (newlines kept), so
    that braces and paths are only code's."""
    out, i, n = list(text), 0, len(text)

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif c in "br" and (m := RAW.match(text, i)) and not (text[i - 1 : i].isalnum() or text[i - 1 : i] == "_"):
            end = text.find('"' + m.group(1), m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            wipe(m.end(), j - 1 - len(m.group(1)))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, j)
            i = j + 1
        elif c == "'" and (m := CHAR.match(text, i)):
            wipe(i + 1, m.end() - 1)
            i = m.end()
        else:
            i += 1
    return "".join(out)


def matching(code, open_at):
    """Index of the brace that closes the one at `open_at`."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code) - 1


def item_end(code, start):
    """Where the item starting at `start` ends: its `;`, or the brace closing its body."""
    depth = 0
    for k in range(start, len(code)):
        ch = code[k]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and ch == ";":
            return k
        elif depth == 0 and ch == "{":
            return matching(code, k)
    return len(code) - 1


def line_of(code, at):
    return code.count("\n", 0, at) + 1


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def test_spans(code):
    """(start, end) of every `#[cfg(test)]` item, and the names of `#[cfg(test)] mod x;`."""
    spans, files = [], []
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        end = item_end(code, m.end())
        spans.append((m.start(), end))
        decl = re.match(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code[m.end():end + 1])
        if decl:
            files.append(decl.group(1))
    return spans, files


def functions(code):
    """(name, first line, line count) of every function with a body."""
    for m in re.finditer(r"\bfn\s+(\w+)", code):
        end = item_end(code, m.end())
        if code[end] != "}":
            continue  # a declaration without a body (trait method, extern)
        first = line_of(code, m.start())
        yield m.group(1), first, line_of(code, end) - first + 1


def expand_use(tree):
    """The paths of one `use` tree (renames and whitespace removed), braces expanded."""
    brace = tree.find("{")
    if brace < 0:
        return [tree.rstrip(":")]
    prefix, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in filter(None, parts):
        out += [prefix + p if p != "self" else prefix.rstrip(":") for p in expand_use(part)]
    return out


def resolve(path, here, is_dir_module, modules):
    """The module (a key of `modules`) a `crate::`/`super::`/`self::` path names, or None."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = (), parts[1:]
    elif parts[0] in ("super", "self"):
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    elif is_dir_module:
        base = here  # a child module named without `self::` (2018 paths)
    else:
        return None
    for k in range(len(parts), -1, -1):
        if base + tuple(parts[:k]) in modules:
            return base + tuple(parts[:k])
    return None


def read_src():
    files = {}
    for path in sorted(SRC.rglob("*.rs")):
        code = blank(path.read_text())
        files[module_of(path)] = (path, code)
    test_only = set()
    for mod, (path, code) in files.items():
        for name in test_spans(code)[1]:
            test_only.add(mod + (name,))
    return files, test_only


def edges(files, test_only):
    """(from module, to module, file:line) for every reference outside test code."""
    found = []
    for mod, (path, code) in files.items():
        if mod in test_only:
            continue
        spans = test_spans(code)[0]
        dir_mod = path.name in ("mod.rs", "lib.rs", "main.rs")
        refs = []
        for m in re.finditer(r"\buse\s+([^;]*);", code):
            refs += [(p, m.start()) for p in expand_use(re.sub(r"\s+as\s+\w+|\s+", "", m.group(1)))]
        for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", code):
            before = code[max(0, m.start() - 2):m.start()]
            if before != "::":
                refs.append((m.group(0), m.start()))
        for p, at in refs:
            if any(a <= at <= b for a, b in spans):
                continue
            target = resolve(p, mod, dir_mod, files)
            if target is not None and target != mod:
                found.append((mod, target, f"{path.relative_to(ROOT)}:{line_of(code, at)}"))
    return found


def cycles(found):
    """Sibling module pairs that reach into each other: {(a, b): (where a→b, where b→a)}."""
    first = {}
    for a, b, where in found:
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        if k == len(a) or k == len(b):
            continue  # ancestor and descendant
        first.setdefault((a[:k + 1], b[:k + 1]), where)
    out = {}
    for (a, b), where in first.items():
        if a < b and (b, a) in first:
            out[(a, b)] = (where, first[(b, a)])
    return out


def name(mod):
    return "::".join(mod) or "crate"


def read_allowlist():
    fns, cyc = {}, {}
    for n, line in enumerate(ALLOWLIST.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        kind, rest = line.split(None, 1)
        if kind == "fn":
            what, limit, reason = rest.split(None, 2)
            fns[what] = (int(limit), n)
        elif kind == "cycle":
            a, b, reason = rest.split(None, 2)
            cyc[tuple(sorted((a, b)))] = n
        else:
            sys.exit(f"{ALLOWLIST}:{n}: unknown kind {kind!r}")
    return fns, cyc


def main():
    files, test_only = read_src()
    allowed_fns, allowed_cycles = read_allowlist()
    problems, seen_fns = [], set()
    listing = "--list" in sys.argv
    for mod, (path, code) in files.items():
        rel = path.relative_to(ROOT)
        for fn, first, lines in functions(code):
            if listing and lines > 60:
                print(f"{lines:4} {rel}:{first} {fn}")
            if lines <= MAX_LINES:
                continue
            key = f"{rel}:{fn}"
            seen_fns.add(key)
            limit, _ = allowed_fns.get(key, (None, None))
            if limit is None:
                problems.append(f"{rel}:{first}: fn {fn} is {lines} lines (at most {MAX_LINES}): split it into named steps")
            elif lines > limit:
                problems.append(f"{rel}:{first}: fn {fn} grew to {lines} lines (allowlisted at {limit}): shrink it")
    for key, (limit, n) in allowed_fns.items():
        if key not in seen_fns:
            problems.append(f"{ALLOWLIST.relative_to(ROOT)}:{n}: fn {key} is no longer over {MAX_LINES} lines: remove the entry")
    seen_cycles = set()
    for (a, b), (ab, ba) in sorted(cycles(edges(files, test_only)).items()):
        key = tuple(sorted((name(a), name(b))))
        seen_cycles.add(key)
        if key not in allowed_cycles:
            problems.append(f"import circle {name(a)} <-> {name(b)}: {ab} reaches {name(b)}, {ba} reaches {name(a)}")
    for key, n in allowed_cycles.items():
        if key not in seen_cycles:
            problems.append(f"{ALLOWLIST.relative_to(ROOT)}:{n}: cycle {key[0]} <-> {key[1]} is gone: remove the entry")
    for p in problems:
        print(p)
    if problems:
        print(f"check-structure: {len(problems)} problem(s); see issue 20 and {ALLOWLIST.relative_to(ROOT)}")
        return 1
    print(f"check-structure: {len(files)} files, no function over {MAX_LINES} lines and no import circle outside the allowlist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
