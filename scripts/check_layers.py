#!/usr/bin/env python3
"""Layering check: dependencies between the crate's modules point down only.

    scripts/check_layers.sh              check src/ of this repository
    scripts/check_layers.sh --root DIR   check DIR/src/ instead
    scripts/check_layers.sh --self-test  run the checker's own tests

Layers, bottom up: sys -> poller -> comm -> task -> http / redis. A module may use
any layer below it, never one above; http and redis never use poller. protocol and
metrics are plain traits and data and import no runtime layer. settings imports
nothing from the crate; error imports protocol only. lib.rs may import anything.
The table ALLOWED below is the whole policy; a module missing from it is reported.

What counts as a use of module X: `crate::X` anywhere in code (use declarations,
grouped imports `use crate::{X, Y::Z}`, expressions, types, `$crate::X` in
macros), and `super::` paths that climb out of the module to the crate root
(`super::super::X` from src/m/file.rs). `crate::Name` where Name is not a module
declared in src/lib.rs (a root re-export such as `crate::Series`) is an error:
re-exports would hide the dependency, so code names the module path. Comments
(doc comments and their intra-doc links included) and string and char literals are
ignored. (Visibility paths such as `pub(in crate::x)` can only name the module's
own ancestors, so they never count against it.)

Output: one line per violation, `src/file.rs:LINE: <module> uses <other> (not
allowed: ...)`, then a count; exit 1. With none: one OK line; exit 0.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

# --- the policy ---------------------------------------------------------------

# The runtime layers, bottom up; http and redis are peers at the top.
CHAIN = [["sys"], ["poller"], ["comm"], ["task"], ["http", "redis"]]
RUNTIME = {m for rank in CHAIN for m in rank}
RANK = {m: i for i, rank in enumerate(CHAIN) for m in rank}

# What each module may use. settings and error are small plain modules at the
# crate root that any runtime layer may use. protocol and metrics are leaves: they
# use neither each other nor error (error imports protocol, so that would be a
# cycle); comm and the layers above use them, sys and poller do not. redis is
# allowed for the future: it needs no entry in src/lib.rs until it exists.
ALLOWED = {
    "settings": set(),
    "error": {"protocol"},
    # The public door to the few process helpers of sys (benches, tests).
    "os": {"sys"},
    "protocol": {"settings"},
    "metrics": {"settings"},
    "sys": {"settings", "error"},
    "poller": {"sys", "settings", "error"},
    "comm": {"sys", "poller", "protocol", "metrics", "settings", "error"},
    "task": {"sys", "poller", "comm", "protocol", "metrics", "settings", "error"},
    "http": {"sys", "comm", "task", "protocol", "metrics", "settings", "error"},
    "redis": {"sys", "comm", "task", "protocol", "metrics", "settings", "error"},
}


def why_not(src, dst):
    """The reason a use of `dst` from `src` breaks the layering."""
    may = ", ".join(sorted(ALLOWED[src]))
    if dst not in ALLOWED:
        return f"{dst} has no layer in scripts/check_layers.py; add it to ALLOWED"
    if src == "settings":
        return "settings imports nothing from the crate"
    if src == "error":
        return "error may import protocol only"
    if src in ("protocol", "metrics"):
        if dst in RUNTIME:
            return f"{dst} is a runtime layer and {src} is plain traits and data; {src} may use {may} only"
        return f"{src} is plain traits and data and may use {may} only"
    if src in ("http", "redis") and dst == "poller":
        why = f"{src} never uses poller"
    elif src in RANK and dst in RANK and RANK[dst] == RANK[src]:
        why = f"{dst} and {src} are peers"
    elif src in RANK and dst in RANK and RANK[dst] > RANK[src]:
        why = f"{dst} is above {src}; dependencies point down only"
    elif dst in ("protocol", "metrics"):
        why = f"{dst} is used from comm up and {src} sits below comm"
    else:
        why = f"{src} does not depend on {dst}"
    return f"{why}; {src} may use {may}"


# --- lexing: blank out comments and literals, keep offsets and newlines --------

_CHAR = re.compile(r"'(?:[^'\\\n]|\\(?:[nrt\\0'\"]|x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]{1,8}\}))'")
_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z_0-9]*")


def _blank(s):
    return "".join(c if c == "\n" else " " for c in s)


def clean(text):
    """`text` with comments, string and char literals replaced by spaces."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(_blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(_blank(text[i:j]))
            i = j
        elif c == "'":
            m = _CHAR.match(text, i)
            if m:
                out.append(" " * (m.end() - i))
                i = m.end()
            else:  # a lifetime or a label
                out.append(c)
                i += 1
        elif _IDENT_START.match(c) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            j = _IDENT.match(text, i + 1).end()
            word = text[i:j]
            if word in ("r", "br", "cr"):
                m = re.compile(r'(#*)"').match(text, j)
                if m:  # a raw string: r"..", r#".."#, br"..", cr".."
                    end = text.find('"' + m.group(1), m.end())
                    end = n if end < 0 else end + 1 + len(m.group(1))
                    out.append(_blank(text[i:end]))
                    i = end
                    continue
            out.append(word)  # b"..", c"..": the quote comes next and is a string
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --- the crate's shape ---------------------------------------------------------

_MOD = re.compile(r"\bmod\s+(?:r#)?([A-Za-z_]\w*)\s*([;{])")
_MACRO_DEF = re.compile(r"\bmacro_rules!\s*(?:r#)?([A-Za-z_]\w*)")


def match_brace(code, i):
    """Offset just past the brace that closes the one at `i`."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def inline_mods(code):
    """[(start, end, name)] for every `mod name { ... }` in `code`."""
    return [(m.end() - 1, match_brace(code, m.end() - 1), m.group(1))
            for m in _MOD.finditer(code) if m.group(2) == "{"]


def file_path_of(rel):
    """src/http/server.rs -> ['http', 'server']; src/http/mod.rs -> ['http']."""
    parts = rel[len("src/"):-len(".rs")].split("/")
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return parts


def path_at(base, mods, off):
    inner = sorted((s, name) for s, e, name in mods if s < off < e)
    return base + [name for _, name in inner]


def line_of(code, off):
    return code.count("\n", 0, off) + 1


class Source:
    def __init__(self, root, rel):
        self.rel = rel
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            self.text = f.read()
        self.code = clean(self.text)
        self.base = file_path_of(rel)
        self.mods = inline_mods(self.code)

    def path(self, off):
        return path_at(self.base, self.mods, off)


def root_modules(lib):
    """{name: line} of the modules src/lib.rs declares at its top level."""
    found = {}
    for m in _MOD.finditer(lib.code):
        if lib.path(m.start()) == []:
            found.setdefault(m.group(1), line_of(lib.code, m.start()))
    return found


# --- finding references --------------------------------------------------------

_CRATE = re.compile(r"(?<![\w$])(\$?crate)\s*::\s*")
_SUPER = re.compile(r"(?<![\w:])(?:self\s*::\s*)?((?:super\s*::\s*)+)")
_NAME = re.compile(r"(?:r#)?([A-Za-z_]\w*)")


def split_group(code, open_at):
    """(offset, text) of each top-level item in the `{...}` group at `open_at`."""
    close = match_brace(code, open_at) - 1
    items, depth, start = [], 0, open_at + 1
    for j in range(open_at + 1, close + 1):
        c = code[j]
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif (c == "," and depth == 0) or j == close:
            item = code[start:j]
            lead = len(item) - len(item.lstrip())
            if item.strip():
                items.append((start + lead, item.strip()))
            start = j + 1
    return items


def root_names(code, off):
    """What a root path names, starting at `off` (just after `crate::`):
    [(offset, name, is_macro)]; name is '*' for a glob."""
    if off >= len(code):
        return []
    if code[off] == "*":
        return [(off, "*", False)]
    if code[off] == "{":
        names = []
        for item_off, item in split_group(code, off):
            if item.startswith("{"):
                names += root_names(code, item_off)
            elif item == "*":
                names.append((item_off, "*", False))
            else:
                m = _NAME.match(item)
                if m and m.group(1) != "self":
                    names.append((item_off, m.group(1), False))
        return names
    m = _NAME.match(code, off)
    if not m:
        return []
    is_macro = re.compile(r"\s*!").match(code, m.end()) is not None
    return [(off, m.group(1), is_macro)]


def references(src, crate_alias=None):
    """[(offset, name, is_macro, how)] of each root name `src` reaches from a module
    other than the crate root (lib.rs's own code is not a user of the layers)."""
    refs = []
    pats = [_CRATE]
    if crate_alias:
        pats.append(re.compile(r"(?<![\w$:])(?:::\s*)?(%s)\s*::\s*" % re.escape(crate_alias)))
    for pat in pats:
        for m in pat.finditer(src.code):
            for off, name, mac in root_names(src.code, m.end()):
                refs.append((off, name, mac, "crate"))
    for m in _SUPER.finditer(src.code):
        ups = m.group(1).count("super")
        here = src.path(m.start())
        if ups < len(here):
            continue  # stays inside the module
        if ups > len(here):
            refs.append((m.start(), "super", False, "above-root"))
            continue
        for off, name, mac in root_names(src.code, m.end()):
            refs.append((off, name, mac, "super"))
    return refs


# --- the check -----------------------------------------------------------------

def rust_files(root):
    src = os.path.join(root, "src")
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == src and d == "bin"))
        for f in sorted(filenames):
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                if rel != "src/main.rs":
                    yield rel


def check(root):
    """(violations, notes, stats); a violation is (file, line, module, what, why)."""
    files = [Source(root, rel) for rel in rust_files(root)]
    lib = next((s for s in files if s.rel == "src/lib.rs"), None)
    if lib is None:
        raise SystemExit(f"check_layers: no src/lib.rs under {root}")
    modules = root_modules(lib)
    alias = re.search(r"\bextern\s+crate\s+self\s+as\s+(\w+)", lib.code)
    alias = alias.group(1) if alias else None

    violations, notes = [], []
    for name, line in sorted(modules.items()):
        if name not in ALLOWED:
            violations.append(("src/lib.rs", line, name, "no layer",
                               "add it to ALLOWED in scripts/check_layers.py"))

    macros = {}
    for s in files:
        for m in _MACRO_DEF.finditer(s.code):
            p = s.path(m.start())
            macros.setdefault(m.group(1), set()).add(p[0] if p else None)

    checked = 0
    for s in files:
        for m in re.finditer(r"#\s*\[\s*path\b", s.code):
            notes.append(f"{s.rel}:{line_of(s.code, m.start())}: note: #[path] moves a module's "
                         "file; this check maps files to modules by their place under src/")
        for off, name, is_macro, how in references(s, alias):
            here = s.path(off)
            if not here:
                continue  # lib.rs may import anything
            owner = here[0]
            if owner not in ALLOWED:
                continue  # reported once, at its declaration
            line = line_of(s.code, off)
            spelled = "crate::" + name
            if how == "above-root":
                violations.append((s.rel, line, owner, "super::", "super:: climbs above the crate root"))
                continue
            if name == "*":
                violations.append((s.rel, line, owner, spelled,
                                   "a glob from the crate root hides which modules are used; "
                                   "import each name by its module path"))
                continue
            if is_macro:
                owners = macros.get(name, set())
                if len(owners) != 1 or None in owners:
                    violations.append((s.rel, line, owner, spelled + "!",
                                       "cannot tell which module defines this macro"))
                    continue
                target = next(iter(owners))
            elif name in modules:
                target = name
            elif name in ALLOWED:
                violations.append((s.rel, line, owner, spelled,
                                   f"{name} is not declared in src/lib.rs yet"))
                continue
            else:
                violations.append((s.rel, line, owner, spelled,
                                   f"{name} is not a module: a root re-export hides the "
                                   f"dependency; use the module path (crate::<module>::{name})"))
                continue
            if target == owner:
                continue
            checked += 1
            if target not in ALLOWED[owner]:
                violations.append((s.rel, line, owner, target, why_not(owner, target)))
    violations = sorted(set(violations), key=lambda v: (v[0], v[1], v[3]))
    stats = {"files": len(files), "modules": len(modules), "references": checked}
    return violations, notes, stats


def report(root):
    violations, notes, stats = check(root)
    for n in notes:
        print(n, file=sys.stderr)
    for f, line, module, what, why in violations:
        if what == "no layer":
            print(f"{f}:{line}: module {module} has no layer ({why})")
        else:
            print(f"{f}:{line}: {module} uses {what} (not allowed: {why})")
    if violations:
        files = len({v[0] for v in violations})
        sys.stdout.flush()
        print(f"check_layers: {len(violations)} violation(s) in {files} file(s)", file=sys.stderr)
        return 1
    print(f"check_layers: OK: {stats['files']} files, {stats['modules']} modules, "
          f"{stats['references']} references between modules, all allowed")
    return 0


# --- self-test -----------------------------------------------------------------

LIB = """\
//! A fake crate. [`crate::http::Thing`] in a doc link is not a dependency.
pub mod comm;
mod error;
pub mod http;
pub mod metrics;
mod poller;
pub mod protocol;
mod settings;
#[allow(unsafe_code)]
pub mod sys;
pub mod task;

pub use error::Error;
pub use task::{Series, Task};
use crate::poller::Anything; // lib.rs may import anything
"""

# Each case: files (besides LIB unless given) and the expected violations as
# (file, line, module, what). An empty list means the tree passes.
CASES = {
    "clean tree": ({
        "src/sys/mod.rs": "use crate::settings::Settings;\npub fn f() {}\n",
        "src/poller/mod.rs": "use crate::sys;\nuse crate::settings::Settings;\nmod timeouts;\n",
        "src/poller/timeouts.rs": "fn f() { crate::sys::prefetch(&0); super::Core::new(); }\n",
        "src/comm/mod.rs": "use crate::poller::{self, Core};\nuse crate::{metrics::ConnStats, protocol::Message};\n",
        "src/task/mod.rs": "use crate::comm::Conn;\nfn f() -> crate::poller::Key { todo!() }\n",
        "src/http/mod.rs": ("use crate::task::{Series, Task};\npub(in crate::http) fn g() {}\n"
                            "pub(crate) use crate::comm::ConnConfig;\nmod server;\n"),
        "src/http/server.rs": "use super::Request;\nuse crate::error::Error;\n",
        "src/protocol/mod.rs": "pub trait Message {}\nuse crate::settings::Settings;\n",
        "src/metrics/mod.rs": "mod jsonl;\nmod testjson;\n",
        "src/metrics/jsonl.rs": ("#[cfg(test)]\nmod tests {\n    use super::super::testjson::parse;\n"
                                 "    use crate::metrics::Side;\n}\n"),
        "src/metrics/testjson.rs": "",
        "src/settings.rs": "pub struct Settings;\n",
        "src/error.rs": "use crate::protocol::ProtocolError;\n",
    }, []),
    "grouped imports, over several lines": ({
        "src/protocol/mod.rs": ("use crate::{\n    poller::Core,\n    comm::{Conn, Done},\n"
                                "    task, protocol::Message,\n    {metrics::ConnStats, sys},\n};\n"),
    }, [("src/protocol/mod.rs", 2, "protocol", "poller"),
        ("src/protocol/mod.rs", 3, "protocol", "comm"),
        ("src/protocol/mod.rs", 4, "protocol", "task"),
        ("src/protocol/mod.rs", 5, "protocol", "metrics"),
        ("src/protocol/mod.rs", 5, "protocol", "sys")]),
    "comments are not code": ({
        "src/protocol/mod.rs": ("//! Moved out of crate::comm, see [`crate::task::Series`].\n"
                                "/// Like [`crate::http::Server`]: crate::poller::Core.\n"
                                "// use crate::comm::Conn;\n"
                                "/* crate::task /* nested: crate::sys */ still a comment crate::comm */\n"
                                "pub trait Protocol {} // crate::task::Task\n"
                                "/** crate::comm */ pub struct A;\n"),
    }, []),
    "strings and chars are not code": ({
        "src/protocol/mod.rs": ('const A: &str = "crate::comm::Conn \\" crate::task";\n'
                                'const B: &str = r#"crate::task "quoted" crate::sys"#;\n'
                                'const C: &[u8] = b"crate::comm";\n'
                                "const D: char = '\"'; fn f() { crate::sys::x(); }\n"
                                "fn g<'a>(x: &'a str) -> crate::task::T<'a> { todo!() }\n"
                                "const E: &str = br\"crate::comm\"; const F: char = '\\'';\n"
                                '#[doc = "crate::comm"]\npub struct G;\n'
                                "let my_crate = 1; my_crate::comm::x(); crate_y::task::z();\n"),
    }, [("src/protocol/mod.rs", 4, "protocol", "sys"),
        ("src/protocol/mod.rs", 5, "protocol", "task")]),
    "paths in expressions, types and macros": ({
        "src/poller/mod.rs": ("fn f() { let x = crate::comm::g(); }\n"
                              "struct S(Vec<crate::task::Series>);\n"
                              "impl crate::http::H for S {}\n"
                              "fn h() { <crate::comm::X as T>::f(); }\n"
                              "macro_rules! m { () => { $crate::task::run() } }\n"),
    }, [("src/poller/mod.rs", 1, "poller", "comm"),
        ("src/poller/mod.rs", 2, "poller", "task"),
        ("src/poller/mod.rs", 3, "poller", "http"),
        ("src/poller/mod.rs", 4, "poller", "comm"),
        ("src/poller/mod.rs", 5, "poller", "task")]),
    "root re-exports and globs": ({
        "src/http/mod.rs": ("use crate::Series;\nfn f() -> crate::Error { todo!() }\n"
                            "use crate::{Task, task::Step};\nuse crate::*;\n"),
    }, [("src/http/mod.rs", 1, "http", "crate::Series"),
        ("src/http/mod.rs", 2, "http", "crate::Error"),
        ("src/http/mod.rs", 3, "http", "crate::Task"),
        ("src/http/mod.rs", 4, "http", "crate::*")]),
    "super:: escapes": ({
        "src/protocol/client.rs": ("use super::Message;\nuse super::super::comm::Conn;\n"
                                   "use super::super::{task::Task, sys};\nuse self::super::super::Series;\n"
                                   "mod a {\n    mod b {\n        use super::super::super::super::poller;\n"
                                   "        use super::super::Message;\n    }\n}\n"),
        "src/protocol/mod.rs": "mod client;\n",
        "src/settings.rs": "use super::poller::Core;\n",
        "src/sys/mod.rs": "fn f() { super::super::x(); }\n",
    }, [("src/protocol/client.rs", 2, "protocol", "comm"),
        ("src/protocol/client.rs", 3, "protocol", "sys"),
        ("src/protocol/client.rs", 3, "protocol", "task"),
        ("src/protocol/client.rs", 4, "protocol", "crate::Series"),
        ("src/protocol/client.rs", 7, "protocol", "poller"),
        ("src/settings.rs", 1, "settings", "poller"),
        ("src/sys/mod.rs", 1, "sys", "super::")]),
    "http and redis never use poller; peers and layers above": ({
        "src/http/mod.rs": "pub(crate) use crate::poller::Core;\nuse crate::redis::Client;\n",
        "src/comm/mod.rs": "use crate::task::Series;\n",
        "src/task/mod.rs": "use crate::http::Request;\n",
        "src/error.rs": "use crate::protocol::E;\nuse crate::comm::Conn;\n",
        "src/metrics/mod.rs": "use crate::protocol::Message;\n",
    }, [("src/comm/mod.rs", 1, "comm", "task"),
        ("src/error.rs", 2, "error", "comm"),
        ("src/http/mod.rs", 1, "http", "poller"),
        ("src/http/mod.rs", 2, "http", "crate::redis"),  # not declared: not a module yet
        ("src/metrics/mod.rs", 1, "metrics", "protocol"),
        ("src/task/mod.rs", 1, "task", "http")]),
    "redis, once it exists; modules without a layer": ({
        "src/lib.rs": LIB + "pub mod redis;\nmod util;\n",
        "src/redis/mod.rs": "use crate::task::Series;\nuse crate::poller::Core;\nuse crate::http::Url;\n",
        "src/util.rs": "use crate::http::Anything;\n",
        "src/task/mod.rs": "use crate::util::helper;\n",
    }, [("src/lib.rs", 17, "util", "no layer"),
        ("src/redis/mod.rs", 2, "redis", "poller"),
        ("src/redis/mod.rs", 3, "redis", "http"),
        ("src/task/mod.rs", 1, "task", "util")]),
    "macros named through the crate root": ({
        "src/http/mod.rs": "macro_rules! statuses { () => {} }\n",
        "src/comm/mod.rs": "crate::statuses!();\ncrate::nowhere!();\n",
        "src/task/mod.rs": "macro_rules! tmac { () => {} }\n",
        "src/sys/mod.rs": "crate::tmac!();\n",
    }, [("src/comm/mod.rs", 1, "comm", "http"),
        ("src/comm/mod.rs", 2, "comm", "crate::nowhere!"),
        ("src/sys/mod.rs", 1, "sys", "task")]),
    "lib.rs inline modules are modules too": ({
        "src/lib.rs": LIB + "mod settings2 {\n    use crate::task::T;\n}\n",
    }, [("src/lib.rs", 16, "settings2", "no layer")]),
}


def self_test():
    failed = 0
    line_re = re.compile(r"src/\S+\.rs:\d+: (\w+ uses \S+ \(not allowed: .+\)"
                         r"|module \w+ has no layer \(.+\))$")
    for name, (files, expected) in CASES.items():
        problems = []
        tmp = tempfile.mkdtemp(prefix="check_layers_")
        try:
            tree = {"src/lib.rs": LIB}
            tree.update(files)
            for rel, text in tree.items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
            got, _, _ = check(tmp)
            got = sorted((f, line, module, what) for f, line, module, what, _ in got)
            for v in sorted(set(expected) - set(got)):
                problems.append(f"missing:    {v}")
            for v in sorted(set(got) - set(expected)):
                problems.append(f"unexpected: {v}")
            # The command line too: exit code and the shape of its output.
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "--root", tmp],
                               capture_output=True, text=True)
            lines = r.stdout.splitlines()
            if not expected:
                if r.returncode != 0 or len(lines) != 1 or not lines[0].startswith("check_layers: OK"):
                    problems.append(f"command line: exit {r.returncode}, {r.stdout!r}")
            elif (r.returncode != 1 or len(lines) != len(expected)
                  or not all(line_re.match(x) for x in lines)):
                problems.append(f"command line: exit {r.returncode}, {r.stdout!r}")
        finally:
            shutil.rmtree(tmp)
        print(("FAIL " if problems else "ok   ") + name)
        for p in problems:
            print("  " + p)
        failed += bool(problems)
    print(f"check_layers self-test: {len(CASES) - failed} of {len(CASES)} cases passed")
    return 1 if failed else 0


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = list(argv)
    if args[:1] == ["--self-test"]:
        return self_test()
    if args[:1] == ["--root"] and len(args) == 2:
        root = args[1]
    elif args:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return report(root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
