"""The package's layout rules (STYLE.md "Layout", issue 19), read from the source with `ast`:
(a) no underscore name crosses a file of fastai_seq; (b) no private name of fastai, fastcore, huggingface_hub or
transformers is used; (c) no `assert` (user input gets real errors, which `python -O` does not strip); (d) a module
imports only from modules above it in the layout. Each failure lists every violation as file:line.
"""
import ast, importlib, importlib.util, sys
from pathlib import Path
import pytest
from conftest import REPO

PKG = REPO/'fastai_seq'
# STYLE.md's layout, top to bottom: a module may import from its own level and those above it. `_utils` comes first
# (helpers shared by two files), `precision` and `distributed` right after `core` (data and metrics use `plain_dl`),
# `mp4` (a leaf: the MP4/MOV sample-table reader) just above `video`, its one user,
# `tracking` after `evaluate`, then `fastai_patches`, which may reach everything it patches; `all` and `__main__` last.
LAYOUT = ['__init__', '_utils', 'core', 'precision', 'distributed', 'mp4', 'video', 'files', 'annotations', 'data', 'datasets',
          'layers', 'metrics', 'losses', 'callbacks', 'registry', 'models', 'learner', 'evaluate', 'tracking',
          'fastai_patches', 'all', '__main__']
THIRD_PARTY = ('fastai', 'fastcore', 'huggingface_hub', 'transformers')
# fastai's documented conventions for subclasses and type dispatch, underscored by design: not private API
FASTAI_CONVENTIONS = {'_show_args', '_default', '_xtra', '_methods', '_docs', '_order'}

def modules() -> list:
    "(dotted module name, path, ast) of every module of fastai_seq"
    out = []
    for f in sorted(PKG.rglob('*.py')):
        rel = f.relative_to(REPO).with_suffix('')
        parts = list(rel.parts)
        if parts[-1]=='__init__': parts = parts[:-1]
        out.append(('.'.join(parts), f, ast.parse(f.read_text(), str(f))))
    return out

def is_pkg(f:Path) -> bool: return f.name=='__init__.py'

def resolve(node:ast.ImportFrom, mod:str, f:Path) -> str:
    "The absolute module name `from ... import` reads from"
    if not node.level: return node.module or ''
    pkg = mod if is_pkg(f) else mod.rpartition('.')[0]
    return importlib.util.resolve_name('.'*node.level + (node.module or ''), pkg)

def ours(name:str) -> bool: return name=='fastai_seq' or name.startswith('fastai_seq.')
def private(name:str) -> bool: return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))
def where(f:Path, node) -> str: return f"{f.relative_to(REPO)}:{node.lineno}"

def module_aliases(tree, mod:str, f:Path, pred) -> dict:
    "Local names bound to modules whose absolute name satisfies `pred` (`import a.b as m`, `from . import x`), -> module name"
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                if pred(a.name): out[a.asname or a.name.split('.')[0]] = a.name if a.asname else a.name.split('.')[0]
        elif isinstance(n, ast.ImportFrom):
            base = resolve(n, mod, f)
            for a in n.names:
                full = f'{base}.{a.name}' if base else a.name
                if pred(full) and (_find_spec(full) if not ours(full) else _our_module(full)) is not None:
                    out[a.asname or a.name] = full
    return out

def _find_spec(name:str):
    try: return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError): return None

def _our_module(name:str):
    p = REPO.joinpath(*name.split('.'))
    return p if p.with_suffix('.py').is_file() or (p/'__init__.py').is_file() else None

def _attr_uses(tree, aliases:dict):
    "(node, module, attribute name) of `m.x` and `getattr(m, 'x')` where `m` is one of `aliases`"
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases:
            yield n, aliases[n.value.id], n.attr
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ('getattr', 'setattr', 'hasattr') \
             and len(n.args)>=2 and isinstance(n.args[0], ast.Name) and n.args[0].id in aliases \
             and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str):
            yield n, aliases[n.args[0].id], n.args[1].value

def test_no_private_name_crosses_a_file():
    "(a) No module imports or reads an underscore name of another module of fastai_seq"
    bad = []
    for mod, f, tree in modules():
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                src = resolve(n, mod, f)
                if not ours(src) or src==mod: continue
                for a in n.names:
                    if private(a.name) and _our_module(f'{src}.{a.name}') is None:
                        bad.append(f"{where(f, n)}: from {src} import {a.name}")
        for n, m, attr in _attr_uses(tree, module_aliases(tree, mod, f, ours)):
            if m!=mod and private(attr): bad.append(f"{where(f, n)}: {m}.{attr}")
    assert not bad, f"{len(bad)} underscore name(s) of fastai_seq used outside their file (make them public, or move " \
                    f"them to _utils.py):\n" + '\n'.join(bad)

def _third_party_privates() -> set:
    "Underscore names defined by fastai, fastcore, huggingface_hub and transformers modules (and their classes) loaded here"
    import fastai_seq.all, fastai.vision.all, fastai.callback.all  # noqa: F401 (what fastai_seq can reach)
    for m in ('fastai.distributed', 'fastai.callback.wandb', 'huggingface_hub.fastai_utils'):
        try: importlib.import_module(m)
        except Exception: pass
    out = set()
    top = lambda o: (getattr(o, '__module__', None) or '').split('.')[0]
    for name, m in list(sys.modules.items()):
        if m is None or name.split('.')[0] not in THIRD_PARTY: continue
        for k, v in list(vars(m).items()):
            if private(k) and top(v) in THIRD_PARTY+('',): out.add(k)
            if isinstance(v, type) and top(v) in THIRD_PARTY:
                out |= {a for a in vars(v) if private(a)}
    return out

def _our_privates() -> set:
    "Underscore names fastai_seq defines at module level or in its own classes (so `lf._fail` is ours)"
    import fastai_seq.all, fastai_seq.__main__  # noqa: F401
    out = set()
    for name, m in list(sys.modules.items()):
        if m is None or not ours(name): continue
        for k, v in list(vars(m).items()):
            if private(k): out.add(k)
            if isinstance(v, type) and ours(getattr(v, '__module__', '')): out |= {a for a in vars(v) if private(a)}
    return out

def _patch_targets() -> set:
    "The last components of `fastai_seq.fastai_patches.CHANGES`' targets (`..._format_config_value`), if that module exists"
    try: from fastai_seq.fastai_patches import CHANGES
    except ImportError: return set()
    return {c.target.rpartition('.')[2] for c in CHANGES}

def test_no_private_name_of_fastai_or_hub():
    "(b) No underscore name of fastai, fastcore, huggingface_hub or transformers is imported or read by fastai_seq"
    theirs = _third_party_privates() - _our_privates() - FASTAI_CONVENTIONS
    is_theirs = lambda m: m.split('.')[0] in THIRD_PARTY
    bad = []
    for mod, f, tree in modules():
        # the one patches module reaches what it replaces (`DistributedDL._broadcast`): only the targets its CHANGES declare
        allowed = _patch_targets() if mod=='fastai_seq.fastai_patches' else set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and is_theirs(resolve(n, mod, f)):
                bad += [f"{where(f, n)}: from {n.module} import {a.name}" for a in n.names if private(a.name)]
        aliases = module_aliases(tree, mod, f, is_theirs)
        for n, m, attr in _attr_uses(tree, aliases):
            if private(attr) and attr not in allowed: bad.append(f"{where(f, n)}: {m}.{attr}")
        # `fd.DistributedDL._broadcast`, `fwb._format_config(...)`: a private name of theirs on any object but self/cls
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr in theirs and not (isinstance(n.value, ast.Name) and
                    (n.value.id in ('self', 'cls') or n.value.id in aliases)) and n.attr not in allowed:
                bad.append(f"{where(f, n)}: {ast.unparse(n)}")
    assert not bad, f"{len(bad)} private name(s) of fastai/fastcore/huggingface_hub/transformers used by fastai_seq:\n" + \
                    '\n'.join(sorted(set(bad)))

def test_no_assert():
    "(c) No `assert` in fastai_seq: `python -O` strips it; user input gets a ValueError/SeqError/VideoError naming the fix"
    bad = [f"{where(f, n)}: assert {ast.unparse(n.test)}" for _, f, tree in modules() for n in ast.walk(tree)
           if isinstance(n, ast.Assert)]
    assert not bad, f"{len(bad)} assert statement(s) in fastai_seq/:\n" + '\n'.join(bad)

def level(mod:str) -> str:
    "A module's place in LAYOUT: its first component under fastai_seq (`fastai_seq.models.simvp` -> 'models')"
    parts = mod.split('.')
    return '__init__' if len(parts)==1 else parts[1]

def _lazy_getattr_lines(tree) -> set:
    "Lines inside a module-level PEP 562 `__getattr__`: the lazy alias of a moved name may point below the module"
    out = set()
    for n in tree.body:
        if isinstance(n, ast.FunctionDef) and n.name=='__getattr__':
            out |= {c.lineno for c in ast.walk(n) if hasattr(c, 'lineno')}
    return out

# the one upward import, lazy and deliberate: `ImageSeq.create('clip.mp4')` decodes with `video.read_frames`, and video.py
# (which builds on core's types) cannot be imported by core at module level. (module, imported module) -> why
UPWARD = {('fastai_seq.core', 'fastai_seq.video'): "ImageSeq.create(video file) decodes it, imported when one is given"}

def test_imports_follow_the_layout():
    "(d) Each module imports only from its own level and the modules above it in STYLE.md's layout (lazy imports too)"
    bad = []
    for mod, f, tree in modules():
        me = level(mod)
        if me not in LAYOUT: bad.append(f"{f.relative_to(REPO)}: module {me!r} is not in the layout list"); continue
        lazy_ok = _lazy_getattr_lines(tree)
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom): srcs = [resolve(n, mod, f)]
            elif isinstance(n, ast.Import): srcs = [a.name for a in n.names]
            else: continue
            if n.lineno in lazy_ok: continue
            for src in srcs:
                if not ours(src): continue
                if isinstance(n, ast.ImportFrom) and src=='fastai_seq':  # `from . import x` / `from fastai_seq import x`
                    targets = [f'fastai_seq.{a.name}' if _our_module(f'fastai_seq.{a.name}') else 'fastai_seq' for a in n.names]
                else: targets = [src]
                for t in targets:
                    them = level(t)
                    if them not in LAYOUT: bad.append(f"{where(f, n)}: {mod} imports {t}, which is not in the layout list")
                    elif LAYOUT.index(them) > LAYOUT.index(me) and not ((mod, t) in UPWARD and n.col_offset>0):
                        bad.append(f"{where(f, n)}: {mod} ({me}) imports {t} ({them}), which is below it in the layout")
    assert not bad, f"{len(bad)} import(s) against the layout {' > '.join(LAYOUT)}:\n" + '\n'.join(bad)
