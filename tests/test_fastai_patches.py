"""What importing fastai_seq changes in fastai: exactly what `fastai_seq.fastai_patches.CHANGES` declares, applied once
however often the modules are reloaded, and named in README's table ("What importing fastai_seq changes in fastai").

The diff is measured, not read from our code: a fresh interpreter imports fastai's applications, snapshots every
attribute (by identity) of fastai's and fastcore's modules and classes, `pathlib.Path` and the torch classes a plugin
could touch, imports `fastai_seq.all`, and lists what was replaced or added.
Run this file as a script to print that diff: `python tests/test_fastai_patches.py`.
"""
import json, re, subprocess, sys, textwrap
import pytest
from conftest import REPO

SNAPSHOT = r'''
import importlib, importlib.util, json, pathlib, sys, types, warnings
warnings.simplefilter('ignore')
import torch
import fastai.vision.all, fastai.tabular.all, fastai.text.all, fastai.callback.all
for m, need in (('fastai.distributed', 'accelerate'), ('fastai.callback.wandb', 'wandb')):
    if importlib.util.find_spec(need) is not None: importlib.import_module(m)
OWNERS = ('fastai', 'fastcore')
EXTRA_CLASSES = [pathlib.Path, pathlib.PurePath, torch.Tensor, torch.nn.Module, torch.utils.data.DataLoader,
                 torch.amp.GradScaler, torch.autocast]

def mod_of(o): return getattr(o, '__module__', None) or ''
def owned(name): return name.split('.')[0] in OWNERS

def snapshot():
    "{target: id(value)} of module-level names and class attributes"
    snap, classes = {}, {c: f'{c.__module__}.{c.__qualname__}' for c in EXTRA_CLASSES}
    for name, m in list(sys.modules.items()):
        if m is None or not owned(name): continue
        for k, v in list(vars(m).items()):
            if isinstance(v, types.ModuleType): continue   # submodules appear as they are imported
            if isinstance(v, type) and owned(mod_of(v)): classes.setdefault(v, f'{v.__module__}.{v.__qualname__}')
            # a name defined in this module (not a re-export), or a module-level value of it
            if mod_of(v) in (name, '') or not callable(v): snap[f'{name}.{k}'] = id(v)
    for c, path in classes.items():
        for k, v in list(vars(c).items()):
            if k in ('__dict__', '__weakref__', '_abc_impl', '__doc__', '__annotations__', '__signature__'): continue
            snap[f'{path}.{k}'] = id(v)
    return snap, {m for m, v in sys.modules.items() if v is not None and owned(m)}

before, mods = snapshot()
keep = {}  # the original objects, by target: kept alive so that their ids stay theirs
import fastai_seq.all
after, mods_after = snapshot()
fresh = mods_after - mods   # fastai modules fastai_seq imports itself: their names are new, not added by a patch
new_mods = {t for t in after if any(t.startswith(m+'.') and t[len(m)+1:].count('.')<=1 for m in fresh)}
replaced = sorted(t for t in before if t in after and after[t]!=before[t])
added = sorted(t for t in after if t not in before and t not in new_mods)
print('JSON' + json.dumps({'replaced': replaced, 'added': added}))
'''

def run(code:str, timeout:int=300) -> str:
    "Run `code` in a fresh interpreter in the repository; its stdout (the test fails with its stderr if it fails)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                       env={**__import__('os').environ, 'PYTHONPATH': str(REPO)})
    assert r.returncode==0, f"exit {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r.stdout

def measured_changes() -> dict:
    "{'replaced': [...], 'added': [...]}: the targets importing fastai_seq.all changes, measured"
    out = run(SNAPSHOT)
    return json.loads(out[out.rindex('JSON')+4:].splitlines()[0])

@pytest.fixture(scope='module')
def measured(): return measured_changes()

def declared() -> list:
    from fastai_seq.fastai_patches import CHANGES  # the contract: a list of Change(target, kind, why) NamedTuples
    return CHANGES

def test_changes_are_declared_well():
    "Each Change names a dotted target, says 'replaced' or 'added' and why, once"
    changes = declared()
    assert changes, "CHANGES is empty"
    bad = [c for c in changes if not (isinstance(c.target, str) and '.' in c.target and c.kind in ('replaced', 'added')
                                      and isinstance(c.why, str) and c.why.strip())]
    assert not bad, f"malformed Change(s): {bad}"
    dup = sorted({c.target for c in changes if [d.target for d in changes].count(c.target)>1})
    assert not dup, f"declared twice: {dup}"
    assert type(changes[0])._fields[:3]==('target', 'kind', 'why')

def test_import_changes_exactly_what_is_declared(measured):
    "The targets importing fastai_seq replaces or adds are exactly CHANGES' targets, each of its declared kind"
    got = {t: 'replaced' for t in measured['replaced']} | {t: 'added' for t in measured['added']}
    want = {c.target: c.kind for c in declared()}
    extra = sorted(set(got)-set(want))
    missing = sorted(set(want)-set(got))
    kinds = sorted(f"{t}: declared {want[t]}, measured {got[t]}" for t in set(got)&set(want) if got[t]!=want[t])
    msg = []
    if extra: msg.append("changed by the import but not in CHANGES:\n  " + '\n  '.join(extra))
    if missing: msg.append("in CHANGES but not changed by the import:\n  " + '\n  '.join(missing))
    if kinds: msg.append("kind differs:\n  " + '\n  '.join(kinds))
    assert not msg, '\n'.join(msg)

RELOAD = r'''
import importlib, sys, warnings
warnings.simplefilter('ignore')
import fastai.vision.all, fastai.tabular.all, fastai.text.all, fastai.callback.all
for m, need in (('fastai.distributed', 'accelerate'), ('fastai.callback.wandb', 'wandb')):
    if importlib.util.find_spec(need) is not None: importlib.import_module(m)
import pathlib
def resolve(target):
    "The owner and attribute name of a dotted target (module path, then classes)"
    parts = target.split('.')
    for i in range(len(parts)-1, 0, -1):
        try: obj = importlib.import_module('.'.join(parts[:i])); break
        except ImportError: continue
    for p in parts[i:-1]: obj = getattr(obj, p)
    return obj, parts[-1]
def value(target):
    owner, name = resolve(target)
    return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
# fastai's own objects, taken before anything of fastai_seq is imported: the targets are read from the source of
# fastai_patches.py, whose import would already replace them
import ast, fastai_seq
src = (pathlib.Path(fastai_seq.__file__).parent/'fastai_patches.py').read_text()
names = {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
candidates = {}
for mod in [m for m in list(sys.modules) if m.startswith('fastai') and sys.modules[m] is not None] + ['pathlib']:
    for k, v in list(vars(sys.modules[mod]).items()):
        if k in names and callable(v): candidates[f'{mod}.{k}'] = v
        if isinstance(v, type):
            for a, w in list(vars(v).items()):
                if a in names: candidates[f'{v.__module__}.{v.__qualname__}.{a}'] = w
import fastai_seq.all
from fastai_seq.fastai_patches import CHANGES
originals = {c.target: candidates.get(c.target) for c in CHANGES if c.kind=='replaced'}
for _ in range(2):
    for name in sorted(m for m in sys.modules if m=='fastai_seq' or m.startswith('fastai_seq.')):
        importlib.reload(sys.modules[name])
bad = []
def func(o): return getattr(o, '__func__', o)
for c in CHANGES:
    owner, name = resolve(c.target)
    now = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if now is None: bad.append(f'{c.target}: gone after reloading'); continue
    if c.kind!='replaced': continue
    chain, o = [], func(now)
    while hasattr(o, '_fastai_seq_orig') and len(chain)<10: o = func(o._fastai_seq_orig); chain.append(o)
    if len(chain)!=1: bad.append(f'{c.target}: the _fastai_seq_orig chain has depth {len(chain)} (want 1: ours -> fastai\'s)')
    elif chain[0] is not func(originals[c.target]): bad.append(f"{c.target}: its _fastai_seq_orig is not fastai's original")
# a plain learner's predict after the reloads: no recursion, fastai's result
import pandas as pd, numpy as np, torch
from fastai.tabular.all import TabularDataLoaders, tabular_learner, Categorify, Normalize
rng = np.random.default_rng(0)
df = pd.DataFrame({'a': rng.normal(size=64), 'b': rng.integers(0, 3, 64).astype(str), 'y': rng.integers(0, 2, 64).astype(str)})
dls = TabularDataLoaders.from_df(df, cat_names=['b'], cont_names=['a'], y_names='y', procs=[Categorify, Normalize], bs=16, num_workers=0)
learn = tabular_learner(dls, layers=[8])
sys.setrecursionlimit(200)
try: p = learn.predict(df.iloc[0])
except RecursionError: bad.append('Learner.predict recurses after reloading')
print('BAD' + repr(bad))
'''

def test_reload_applies_each_change_once():
    "Reloading every fastai_seq module twice leaves each replaced target one wrapper away from fastai's original"
    out = run(RELOAD)
    bad = eval(out[out.rindex('BAD')+3:].splitlines()[0])
    assert not bad, '\n'.join(bad)

def test_readme_table_names_every_change():
    "README's section 'What importing fastai_seq changes in fastai' names every CHANGES target"
    text = (REPO/'README.md').read_text()
    m = re.search(r'^(#+)\s*What importing fastai_seq changes in fastai\s*$', text, flags=re.M)
    assert m, "README.md has no section titled 'What importing fastai_seq changes in fastai'"
    rest = text[m.end():]
    end = re.search(rf'^#{{1,{len(m.group(1))}}}\s', rest, flags=re.M)
    section = rest[:end.start() if end else None]
    rows = [l for l in section.splitlines() if l.lstrip().startswith('|')]
    assert rows, "the section has no table"
    table = '\n'.join(rows)
    def named(t):
        short = '.'.join(t.split('.')[-2:])   # `MixedPrecision.before_fit`, `wandb._format_config_value`
        return t in table or re.search(rf'(?<![\w]){re.escape(short)}(?![\w])', table)
    missing = [c.target for c in declared() if not named(c.target)]
    assert not missing, "README's table does not name: " + ', '.join(missing)

if __name__=='__main__':
    d = measured_changes()
    for k in ('replaced', 'added'):
        print(f"{k} ({len(d[k])}):"); print(textwrap.indent('\n'.join(d[k]), '  '))
