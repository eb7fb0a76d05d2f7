"""The public signatures of fastai_seq against its contract, `../shared/API.md`: the two cannot drift apart silently.

API.md is found at `../shared/API.md` beside the repository (as CI lays it out) or at `$FASTAI_SEQ_SHARED/API.md`; the
tests skip, saying so, when it is absent. For each public name API.md documents:
* `from fastai_seq.all import *` exports it (§6's names: `fastai_seq.__main__` has them);
* each documented call signature (`name(a, b=1, *args, **kwargs)` at the start of a line of a code block, an inline
  code span that is a whole call, `learn.x(...)`/`ann.x(...)`/`Class.method(...)`, a `(args)` span after a run of names,
  `# .method(...)` comments under a class in a code block) matches `inspect.signature`: every documented parameter is
  there, at the documented position, of the documented kind, with the documented default (compared by value:
  literals, or the source evaluated in the defining module's namespace, e.g. `MAX_PIXELS`, `defaults.cpus`; a
  default written `...` only says there is one). The code may add optional parameters after the documented ones
  (API.md: "Where this page is silent, do what a fastai user would expect"); a signature ending in `...` may go on.
Every mismatch of one name is reported in one failure that names the parameter.
"""
import ast, inspect, os, re, sys
from pathlib import Path
import pytest
from conftest import REPO

def api_md() -> Path|None:
    "API.md: `$FASTAI_SEQ_SHARED/API.md`, else `../shared/API.md` beside the repository"
    for d in (os.environ.get('FASTAI_SEQ_SHARED'), REPO.parent/'shared'):
        if d and (Path(d)/'API.md').is_file(): return Path(d)/'API.md'
    return None

# names API.md documents that arrive with a later issue
LATER = {}   # names API.md documents ahead of the code: name -> the issue that builds them
# deliberate changes of a documented signature, reported in the session note for API.md to follow: name -> why. The test
# is a strict xfail: once API.md says the new thing, it passes, fails as XPASS, and the entry must go
CHANGED = {'seq_learner': "pretrained=None (True for 'hf-hub:' checkpoints, else False), API.md still says False",
           'ImageTupleTransform': "train=True (the role explicit, issue 19 item 4), API.md still says train=None"}
# `obj.method(...)` forms: the class whose method the object's name stands for
OBJECTS = {'learn': 'Learner', 'ann': 'VideoAnnotations'}
# bare method names API.md documents in prose, and the class they belong to
METHODS = {'get_items': 'VideoAnnotations.get_items', 'get_split': 'VideoAnnotations.get_split'}
# §6: the command line's module
# fastai's names API.md mentions that live in a fastai module needing an extra (fastai.callback.wandb needs wandb)
FASTAI_WITH_EXTRAS = {'WandbCallback'}
MAIN_NAMES = {'run_forecast', 'run_classify', 'EpochLines', 'console_logging'}

_IDENT = r'[A-Za-z_]\w*'
_CALL = re.compile(rf'(\.?{_IDENT}(?:\.{_IDENT})*)\(')

def _close(s:str, i:int) -> int:
    "Index just past the parenthesis that closes the one opened at `s[i]`, else -1"
    depth, q = 0, None
    for j in range(i, len(s)):
        c = s[j]
        if q:
            if c==q: q = None
        elif c in '\'"': q = c
        elif c in '([{': depth += 1
        elif c in ')]}':
            depth -= 1
            if depth==0: return j+1
    return -1

def _strip_comment(line:str) -> tuple:
    "(code, comment) of one line of a code block (a `#` outside quotes starts the comment)"
    q = None
    for i,c in enumerate(line):
        if q:
            if c==q: q = None
        elif c in '\'"': q = c
        elif c=='#': return line[:i], line[i+1:]
    return line, ''

def parse_api(text:str) -> tuple:
    "(signatures: list of (name, args source, where), public: dict name -> where) documented by API.md's `text`"
    sigs, public, section = [], {}, ''
    def add_sig(name, args, where, row=None):
        if name.startswith('.'):  # `.show(...)`: a method of the class a table row is about, else not checked
            if row is None: return
            name = row+name
        head, _, rest = name.partition('.')
        if head in OBJECTS: name = f'{OBJECTS[head]}.{rest}'
        elif not rest and head in METHODS: name = METHODS[head]
        elif rest and not head[0].isupper(): return  # `dls.show_batch()`, `dblock.dataloaders(...)`: usage
        sigs.append((name, args, where))
    # fenced code blocks
    blocks = []
    def _fence(m):
        blocks.append((m.group(1), text[:m.start()].count('\n')+1))
        return '\n'*m.group(0).count('\n')
    prose = re.sub(r'^```[^\n]*\n(.*?)^```', _fence, text, flags=re.S|re.M)
    for body, line0 in blocks:
        code_lines, comments = zip(*(_strip_comment(l) for l in body.split('\n')))
        code = '\n'.join(code_lines)
        starts = [0] + [m.end() for m in re.finditer('\n', code)]
        skip_to, last_class = 0, None
        for ln, st in enumerate(starts):
            if st < skip_to:
                m = None
            else: m = re.match(rf'[ \t]*(?:{_IDENT}\s+=\s+)?({_IDENT}(?:\.{_IDENT})*)\(', code[st:])
            if m:
                i = st+m.end()-1; j = _close(code, i)
                if j<0: continue
                name = m.group(1)
                add_sig(name, code[i+1:j-1], f'API.md line {line0+ln+1}')
                last_class = name if name[0].isupper() and '.' not in name else None
                skip_to = j
            # `# .generate(n, rng=None), .dataloaders(...)`: methods of the class documented above
            if last_class and comments[ln]:
                for cm in re.finditer(rf'(?<![\w.])\.({_IDENT})\(', comments[ln]):
                    k = _close(comments[ln], cm.end()-1)
                    if k>0: add_sig(f'{last_class}.{cm.group(1)}', comments[ln][cm.end():k-1], f'API.md line {line0+ln+1}')
    # inline code spans of the prose (a span may run over a line break)
    lines_at = lambda pos: prose[:pos].count('\n')+1
    spans = [(m.group(1).replace('\n', ' '), m.start(), m.end()) for m in re.finditer(r'`([^`]+)`', prose)]
    names_run = []
    for k,(s,a,b) in enumerate(spans):
        where = f'API.md line {lines_at(a)}'
        if re.fullmatch(_IDENT, s):
            between = prose[spans[k-1][2]:a] if k else ''
            names_run = (names_run if k and re.fullmatch(r'[\s,]*', between) else []) + [s]
            continue
        if s.startswith('(') and names_run and re.fullmatch(r'\s*', prose[spans[k-1][2]:a]):
            j = _close(s, 0)
            if j>0:
                for n in names_run: add_sig(n, s[1:j-1], where)
            names_run = []; continue
        names_run = []
        m = re.fullmatch(rf'(\.?{_IDENT}(?:\.{_IDENT})*)\((.*)', s)
        if not m: continue
        j = _close(s, m.end(1))
        if j<0: continue
        tail = s[j:].strip()
        if tail and not tail.startswith('->'): continue  # `f(x)[0]`, `a(b) + c`: an expression, not a signature
        line = prose[prose.rfind('\n', 0, a)+1:]
        row = re.match(rf'\|\s*`({_IDENT})`\s*\|', line)
        add_sig(m.group(1), s[m.end(1)+1:j-1], where, row and row.group(1))
    # names listed as public in prose: sentences (or bullets) that say "public", the readers and helpers lists,
    # and the first column of the tables
    for para in re.split(r'\n\s*\n|\n(?=\* )|(?<=\.)\s+(?=[A-Z`])', prose):
        if not re.search(r'\bpublic\b|^\s*(?:\*\s*)?(?:Readers|Helpers|Configurable factories)\b|\bReaders:|\bHelpers:', para): continue
        if 'public API contract' in para: continue
        base = prose.find(para)
        for m in re.finditer(r'`([^`]+)`', para):
            n = re.match(rf'({_IDENT})(?:\(|$)', m.group(1).strip())
            if n and not m.group(1).startswith('.'): public.setdefault(n.group(1), f'API.md line {lines_at(base+m.start())}')
    for m in re.finditer(r'^\|\s*(`[^|]*)\|', prose, flags=re.M):
        for s in re.finditer(r'`([^`]+)`', m.group(1)):
            n = re.match(rf'({_IDENT})(?:\(|$)', s.group(1))
            if n: public.setdefault(n.group(1), f'API.md line {lines_at(m.start())}')
    mentioned = {}
    for m in re.finditer(rf'`({_IDENT})`', prose): mentioned.setdefault(m.group(1), f'API.md line {lines_at(m.start())}')
    return sigs, public, mentioned

_API = api_md()
SIGS, PUBLIC, MENTIONED = parse_api(_API.read_text()) if _API else ([], {}, {})

def _fastai_seq_module(obj) -> str:
    "The fastai_seq module that defines `obj`, else ''"
    m = getattr(obj, '__module__', None) or ''
    return m if m=='fastai_seq' or m.startswith('fastai_seq.') else ''

def _ours() -> set:
    "Documented names that are fastai_seq's: fastai's own (`DataBlock`, `learn.export()`) are not this contract's"
    if not _API: return set()
    import fastai_seq.all as a, fastai_seq.__main__ as main
    from fastai.learner import Learner
    out = set()
    for n in {n for n,*_ in SIGS} | set(PUBLIC):
        head, _, rest = n.partition('.')
        if head in LATER or head in PUBLIC or head in MAIN_NAMES: out.add(n); continue
        obj = Learner if head=='Learner' else Path if head=='Path' else getattr(a, head, None)
        if obj is None:
            import fastai.vision.all as fv, fastai.callback.all as fc
            try: import fastai.callback.wandb as fw
            except ImportError: fw = None
            if any(hasattr(m, head) for m in (fv, fc, fw, Learner)): continue  # fastai's name (`learn.validate()`)
            if fw is None and head in FASTAI_WITH_EXTRAS: continue  # fastai's, in a module its extra's absence hides
            out.add(n); continue  # documented, found nowhere: the test says so
        if rest: obj = getattr(obj, rest.split('.')[0], obj)
        if _fastai_seq_module(obj) or not rest and head not in vars(__import__('fastai.vision.all').vision.all): out.add(n)
    # a name API.md mentions that a module of fastai_seq defines (not a model class, which the registry reaches)
    mods = [m for k,m in list(sys.modules.items()) if k.startswith('fastai_seq.') and not k.startswith('fastai_seq.models')]
    for n in MENTIONED:
        if n in out or n.startswith('_') or n in vars(Learner): continue   # `learn.forecast(...)`: a method we add
        for m in mods:
            obj = vars(m).get(n)
            if obj is not None and (_fastai_seq_module(obj) or n in getattr(m, '__all__', ())) and \
               not _fastai_seq_module(obj).startswith('fastai_seq.models'):
                out.add(n); break
    return out

def _names() -> list:
    "One test per documented name: the signatures' names (a method by its class) and the names listed as public"
    names = sorted(_ours())
    if not names: return [pytest.param(None, marks=pytest.mark.skip(reason="API.md not found: set FASTAI_SEQ_SHARED or put it at ../shared/API.md"))]
    return [pytest.param(n, marks=pytest.mark.xfail(reason=LATER[n], strict=False)) if n.split('.')[0] in LATER else
            pytest.param(n, marks=pytest.mark.xfail(reason=CHANGED[n], strict=True)) if n in CHANGED else n for n in names]

def test_api_md_parsed():
    "The parser finds API.md's signatures (a guard against a parser that silently finds nothing)"
    if _API is None: pytest.skip("API.md not found: set FASTAI_SEQ_SHARED or put it at ../shared/API.md")
    got = {n for n,*_ in SIGS}
    for n in ('SeqBlock', 'VideoBlock', 'read_frames', 'MovingMNIST', 'MovingMNIST.to_npy', 'VideoAnnotations.from_list',
              'TimeDistributed', 'seq_learner', 'ls_sorted', 'Learner.evaluate_clips', 'MSEFrame', 'sample_indices',
              'VideoAnnotations.get_items', 'push_to_hub_seq', 'console_logging'):
        assert n in got, f"the API.md parser found no signature of {n}"
    assert {'MovingMNISTFrames', 'VIDEO_EXTS', 'VideoInfo', 'read_ssv2_json', 'real_items', 'SkipLog', 'ImageSeqBW'} <= set(PUBLIC)

def _exports() -> set:
    import fastai_seq.all as a
    return set(a.__all__) if hasattr(a, '__all__') else {n for n in vars(a) if not n.startswith('_')}

def _resolve(name:str):
    "(object, namespace of its module) of a documented name, raising LookupError saying where it was looked for"
    import fastai_seq.all as a, fastai_seq.__main__ as main
    from fastai.learner import Learner
    head, _, rest = name.partition('.')
    home = main if head in MAIN_NAMES else a
    if head=='Learner': obj = Learner
    elif head=='Path': obj = Path
    elif hasattr(home, head): obj = getattr(home, head)
    else: raise LookupError(f"{head}: not in {home.__name__}")
    for part in rest.split('.') if rest else []:
        if not hasattr(obj, part): raise LookupError(f"{name}: {head} has no attribute {part!r}")
        obj = getattr(obj, part)
    mod = sys.modules.get(getattr(obj, '__module__', None) or '', home)
    return obj, vars(mod)

_MISSING = object()
def _default(src:str, ns:dict):
    "The value of a documented default's source `src`; `...` for 'some default'; `_MISSING` if it cannot be evaluated"
    if src.strip()=='...': return ...
    try: return ast.literal_eval(src)
    except Exception: pass
    import fastai_seq.all as a
    for space in (ns, vars(a)):
        try: return eval(src, dict(space))
        except Exception: pass
    return _MISSING

def _same(doc, code) -> bool:
    if doc is ...: return code is not inspect.Parameter.empty
    if doc is code: return True
    if isinstance(doc, (tuple, list)) and isinstance(code, (tuple, list)): return tuple(doc)==tuple(code) and type(doc)==type(code)
    try: return bool(doc==code) and type(doc) in (type(code), int, float) and type(code) in (type(doc), int, float, bool)
    except Exception: return False

def _takes_kwargs(obj) -> bool:
    "Whether the code of `obj` (a function, or a class's `__init__`) has a `**kwargs` parameter, whatever its `__signature__` says"
    f = obj.__init__ if inspect.isclass(obj) else obj
    f = inspect.unwrap(getattr(f, '__func__', f))
    return bool(getattr(getattr(f, '__code__', None), 'co_flags', 0) & inspect.CO_VARKEYWORDS)

def check_signature(name:str, args:str, where:str, obj, ns:dict) -> list:
    "The mismatches between the signature documented as `name(args)` and `obj`'s, one string each"
    doc_args = args.strip()
    open_ended = bool(re.search(r'(^|,)\s*\.\.\.\s*$', doc_args))
    if open_ended: doc_args = re.sub(r'(^|,)\s*\.\.\.\s*$', '', doc_args)
    try: fn = ast.parse(f'def f({doc_args}): pass').body[0].args
    except SyntaxError as e: return [f"{name} ({where}): cannot read the documented parameters ({args!r}): {e.msg}"]
    a = fn.args
    doc = [(p.arg, 'POSITIONAL_OR_KEYWORD') for p in fn.posonlyargs+a] + ([(fn.vararg.arg, 'VAR_POSITIONAL')] if fn.vararg else [])
    doc += [(p.arg, 'KEYWORD_ONLY') for p in fn.kwonlyargs] + ([(fn.kwarg.arg, 'VAR_KEYWORD')] if fn.kwarg else [])
    pos = fn.posonlyargs+a
    defaults = {p.arg: ast.get_source_segment(f'def f({doc_args}): pass', d) for p,d in zip(pos[len(pos)-len(fn.defaults):], fn.defaults)}
    defaults.update({p.arg: ast.get_source_segment(f'def f({doc_args}): pass', d) for p,d in zip(fn.kwonlyargs, fn.kw_defaults) if d is not None})
    if not callable(obj) and hasattr(obj, '__wrapped__'): obj = obj.__wrapped__  # a method descriptor
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError) as e: return [f"{name} ({where}): no signature to compare ({e})"]
    params = list(sig.parameters.values())
    if (inspect.isclass(obj) or inspect.isfunction(obj) and '.' in name) and params and params[0].name=='self':
        params = params[1:]  # `Learner.predict`: the method seen from the instance; a class whose signature shows `self`
    out, code_names = [], [p.name for p in params]
    code_sig = f"{name}{sig}"
    for i,(pn, kind) in enumerate(doc):
        if kind=='VAR_KEYWORD' and pn not in code_names and _takes_kwargs(obj):
            continue  # `@delegates`: the signature shows the keywords `**kwargs` passes on instead of `**kwargs`
        if pn not in code_names:
            out.append(f"{name}: parameter {pn!r} documented ({where}) but missing from the code: {code_sig}"); continue
        j = code_names.index(pn); p = params[j]
        if kind=='POSITIONAL_OR_KEYWORD' and pn not in defaults and j!=i:  # a required argument users pass by position
            out.append(f"{name}: parameter {pn!r} is #{i+1} in API.md ({where}) but #{j+1} in the code: {code_sig}")
        if i and doc[i-1][0] in code_names and code_names.index(doc[i-1][0]) > j:
            out.append(f"{name}: parameter {pn!r} comes after {doc[i-1][0]!r} in API.md ({where}) but before it in the code: {code_sig}")
        if kind in ('VAR_POSITIONAL', 'VAR_KEYWORD') and p.kind.name!=kind:
            out.append(f"{name}: parameter {pn!r} is {kind.lower()} in API.md ({where}) but {p.kind.name.lower()} in the code")
        if kind=='POSITIONAL_OR_KEYWORD' and p.kind.name=='KEYWORD_ONLY':
            out.append(f"{name}: parameter {pn!r} is positional in API.md ({where}) but keyword-only in the code")
        if pn in defaults:
            want = _default(defaults[pn], ns)
            if want is _MISSING: continue  # `TopKAccuracy(k=min(5, n_classes))`: an example of a call, not a default value
            if not _same(want, p.default):
                have = 'no default' if p.default is inspect.Parameter.empty else f'default {p.default!r}'
                out.append(f"{name}: parameter {pn!r} has default {defaults[pn]} in API.md ({where}) but {have} in the code")
        elif kind in ('POSITIONAL_OR_KEYWORD', 'KEYWORD_ONLY') and p.default is not inspect.Parameter.empty and not open_ended:
            pass  # documented without a default, optional in the code: a call written from the docs works
    # what the code requires beyond the documented parameters breaks a call written from the docs
    doc_names = {pn for pn,_ in doc}
    for p in params:
        if p.name in doc_names or p.kind.name in ('VAR_POSITIONAL', 'VAR_KEYWORD'): continue
        if p.default is inspect.Parameter.empty and not open_ended:
            out.append(f"{name}: parameter {p.name!r} is required by the code but not documented ({where}): {code_sig}")
    return out

@pytest.mark.parametrize('name', _names())
def test_contract(name):
    "The documented name is exported where API.md says, and each of its documented signatures matches the code"
    problems = []
    head = name.split('.')[0]
    if head not in ('Learner', 'Path'):
        if head in MAIN_NAMES:
            import fastai_seq.__main__ as main
            if not hasattr(main, head): problems.append(f"{head}: fastai_seq.__main__ has no {head} (API.md §6)")
        elif head not in _exports():
            problems.append(f"{head}: not exported by `from fastai_seq.all import *` ({PUBLIC.get(head) or MENTIONED.get(head) or next((w for n,_,w in SIGS if n.split('.')[0]==head), 'API.md')})")
    try: obj, ns = _resolve(name)
    except LookupError as e: problems.append(f"{name}: cannot be found ({e})"); obj = None
    if obj is not None:
        for n,args,where in SIGS:
            if n==name: problems += check_signature(name, args, where, obj, ns)
    assert not problems, '\n'.join(problems)
