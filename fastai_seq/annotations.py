"Where items, labels and splits come from: the field's annotation files (HMDB51 splits, 'path label' lists, Kinetics CSVs, Something-Something v2 JSON) as `get_items`/`get_y`/`splitter` for a `DataBlock`; UCF101's splits and `GroupSplitter`"
from __future__ import annotations
import csv, functools, json, os, re, warnings
from pathlib import Path
from typing import NamedTuple
import torch
from fastcore.basics import ifnone
from fastcore.foundation import L
from .core import VIDEO_EXTS, ON_ERROR

__all__ = ['AnnotationRecord', 'MissingFilesWarning', 'VideoAnnotations', 'read_hmdb51_splits', 'read_path_label_list',
           'read_kinetics_csv', 'read_ssv2_json', 'kinetics_name', 'ssv2_class', 'ucf101_splits', 'ucf101_group',
           'GroupSplitter']

def _ucf_key(o) -> str:
    "Matching key of a video file or frame folder: its name without video extension, lower case"
    p = Path(o)
    return (p.stem if p.suffix.lower() in VIDEO_EXTS else p.name).lower()

class AnnotationRecord(NamedTuple):
    "One entry of an annotation file: the path it names (relative to the data root), its label and its split"
    rel: str     # path relative to the root, as the file writes it (a video file or a frame folder)
    label: object # class name (or int), None when the file gives none (test lists)
    split: str   # 'train', 'valid', 'test' or 'unused'
    src: str     # the annotation file (and line) it came from, for error messages

class MissingFilesWarning(UserWarning):
    "An annotation file names files the data folder lacks, and `on_error='skip'` left them out"

_SPLITS = {'train':'train', 'training':'train', 'val':'valid', 'valid':'valid', 'validate':'valid', 'validation':'valid',
           'test':'test', 'testing':'test', 'unused':'unused'}

def _norm_split(s, src) -> str:
    k = str(s).strip().lower()
    if k not in _SPLITS: raise ValueError(f"{src}: unknown split {s!r}; expected one of {sorted(set(_SPLITS))}.")
    return _SPLITS[k]

def _list_missing(missing, n=10) -> str:
    return ''.join(f'\n  {m.rel}  ({m.src})' for m in missing[:n]) + (f'\n  ... and {len(missing)-n} more' if len(missing)>n else '')

def _annotation_file(fn, root=None) -> Path:
    "`fn` as given, else inside `root`; a clear error when it is in neither"
    p = Path(fn)
    if p.is_file(): return p
    if root is not None and (Path(root)/p).is_file(): return Path(root)/p
    raise FileNotFoundError(f"annotation file {fn} not found" + (f" (nor in {root})" if root is not None else '') +
                            ". Download the dataset's annotation files and pass their path.")

class _Method:
    "A bound method that is no `MethodType`: `DataBlock` rebinds those to itself; this one keeps its annotations (and pickles)"
    def __init__(self, obj, name): self.obj,self.name,self.__qualname__ = obj,name,f'VideoAnnotations.{name}'
    def __call__(self, *args, **kwargs): return getattr(type(self.obj), self.name).func(self.obj, *args, **kwargs)
    def __repr__(self): return f'<{self.name} of {self.obj!r}>'

class _datablock_method:
    "Decorator: the method, taken from an instance, is a `_Method`, so it can be passed to `DataBlock(get_items=...)`"
    def __init__(self, func): self.func = func; functools.update_wrapper(self, func)
    def __set_name__(self, owner, name): self.name = name
    def __get__(self, obj, cls=None): return self if obj is None else _Method(obj, self.name)

class VideoAnnotations:
    "Records read from an annotation file, giving a `DataBlock` its `get_items`, `get_y` and `splitter`"
    def __init__(self,
        records, # `AnnotationRecord`s (or `(rel, label, split, src)` tuples)
        root=None, # Folder the records' paths are relative to; or pass it to `get_items` (`dblock.dataloaders(root)`)
        on_error:str='raise', # Listed files the folder lacks: 'raise' an error listing them, or 'skip' them (see `n_missing`)
        source:str='', # The annotation file(s), named in errors
        splits=('train','valid'), # Which splits `get_items` returns (`splitter`: 'train' -> training, the others -> validation)
    ):
        if on_error not in ON_ERROR: raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.records = L(AnnotationRecord(*r) for r in records)
        if not self.records: raise ValueError(f"{source or 'annotations'}: no entries found. Is this the right file?")
        self.root, self.on_error, self.source, self.splits = (Path(root) if root is not None else None), on_error, source, tuple(splits)
        self.missing, self._by_item, self._by_key = L(), {}, {}

    def __len__(self): return len(self.records)
    def __repr__(self):
        counts = {s: sum(r.split==s for r in self.records) for s in dict.fromkeys(r.split for r in self.records)}
        return f"VideoAnnotations({self.source or 'records'}: {counts}, {len(self.vocab)} classes)"

    @property
    def vocab(self) -> list:
        "The sorted labels of the records"
        return sorted({r.label for r in self.records if r.label is not None}, key=lambda o: (isinstance(o, str), o))

    @property
    def n_missing(self) -> int:
        "How many listed files the folder lacked at the last `get_items` (under `on_error='skip'`)"
        return len(self.missing)

    def _files_by_key(self, root:Path) -> dict:
        "Video files and folders under `root`, by matching key (name without video extension, lower case)"
        vids, dirs = {}, {}
        for d, dns, fns in os.walk(root, followlinks=True):
            for f in fns:
                if Path(f).suffix.lower() in VIDEO_EXTS: vids.setdefault(_ucf_key(f), []).append(Path(d)/f)
            for n in dns: dirs.setdefault(n.lower(), []).append(Path(d)/n)
        return {**dirs, **vids}  # a video file wins over a folder of the same name

    def _resolve(self, rec, root, index):
        p = root/rec.rel
        if p.exists(): return p, index
        if index is None: index = self._files_by_key(root)
        found = index.get(_ucf_key(rec.rel), [])
        if len(found) > 1: raise ValueError(f"{rec.src}: {rec.rel} matches {len(found)} files in {root} ({found[0]}, {found[1]}, "
                                            "...): give the list's paths relative to `root`, or keep one copy.")
        return (found[0] if found else None), index

    @_datablock_method
    def get_items(self,
        path=None, # The data folder (default: the `root` given when reading the annotations)
    ) -> L:
        "The listed files of the wanted splits that exist under `path`, as `Path`s; missing ones raise or are counted"
        root = ifnone(path, self.root)
        if root is None: raise ValueError(f"{self.source}: pass the data folder, `dblock.dataloaders(root)` or `root=`.")
        root = Path(root)
        if not root.is_dir(): raise FileNotFoundError(f"{root}: data folder not found (the paths of {self.source} are relative to it).")
        items, missing, index = L(), L(), None
        self._by_item, self._by_key = {}, {}
        wanted = [r for r in self.records if r.split in self.splits]
        for rec in wanted:
            p, index = self._resolve(rec, root, index)
            if p is None: missing.append(rec); continue
            if (prev := self._by_item.get(str(p))) is not None:
                raise ValueError(f"{p} is listed twice: {prev.src} ({prev.split}) and {rec.src} ({rec.split}). "
                                 "A video belongs to one split: fix the lists.")
            items.append(p)
            self._by_item[str(p)] = rec
            self._by_key.setdefault(_ucf_key(p), rec)
        self.missing = missing
        if missing:
            msg = f"{self.source}: {len(missing)} of {len(wanted)} listed files are not in {root}:{_list_missing(missing)}\n"
            if self.on_error=='raise' or not items:
                raise FileNotFoundError(msg + ("None was found: is `root` the folder the list's paths are relative to? " if not items else
                    "Check `root` (the folder the list's paths are relative to), download or extract the missing files, ") +
                    "or pass on_error='skip' to leave missing files out.")
            warnings.warn(f"on_error='skip': leaving out {msg}(see `.missing`)", MissingFilesWarning)
        return items

    def _record(self, o) -> AnnotationRecord:
        rec = self._by_item.get(str(o)) or self._by_key.get(_ucf_key(o))
        if rec is None:
            rec = next((r for r in self.records if _ucf_key(r.rel)==_ucf_key(o)), None)
            if rec is None: raise KeyError(f"{o}: not in the annotation file(s) {self.source}. Use the items of `get_items`.")
        return rec

    @_datablock_method
    def get_y(self,
        o, # An item from `get_items`
    ):
        "The label of item `o` (a path from `get_items`)"
        lbl = self._record(o).label
        if lbl is None: raise ValueError(f"{o}: {self._record(o).src} gives no label for it (a test list?).")
        return lbl

    def get_split(self,
        o, # An item from `get_items`
    ) -> str:
        "The split ('train', 'valid', 'test', 'unused') of item `o`"
        return self._record(o).split

    @_datablock_method
    def splitter(self,
        items, # The items from `get_items`
    ) -> tuple:
        "Indices of the training items and of the others (validation), from the annotation files' own splits"
        splits = [self.get_split(o) for o in items]
        return L(i for i,s in enumerate(splits) if s=='train'), L(i for i,s in enumerate(splits) if s!='train')

    @classmethod
    def from_hmdb51(cls,
        split_dir, # Folder of HMDB51's `<class>_test_split<N>.txt` files (testTrainMulti_7030_splits)
        split:int=1, # Official split 1, 2 or 3
        root=None, # Data folder: `<class>/<video>.avi` (or frame folders of the same names, anywhere below it)
        **kwargs # `VideoAnnotations` arguments (`on_error`, `splits`)
    ) -> VideoAnnotations:
        "HMDB51's official split files: tag 1 -> train, 2 -> valid (the papers' test set), 0 -> unused"
        return cls(read_hmdb51_splits(split_dir, split), root, source=f"{split_dir}/*_test_split{split}.txt", **kwargs)

    @classmethod
    def from_list(cls,
        train, # A 'path label' list file (mmaction2 / PyTorchVideo style) for training
        valid=None, # The list file for validation
        root=None, # Folder the lists' paths are relative to
        classes=None, # Names for integer labels: a list, or a file of one name a line ('name' or 'index name', as UCF101's classInd.txt)
        test=None, # A list file for the 'test' split (returned by `get_items` only if `splits` includes 'test')
        **kwargs # `VideoAnnotations` arguments (`on_error`, `splits`)
    ) -> VideoAnnotations:
        "'path label' list files, one per split"
        recs = [r for fn,s in ((train,'train'), (valid,'valid'), (test,'test')) if fn is not None
                for r in read_path_label_list(fn, split=s, classes=classes, root=root)]
        return cls(recs, root, source=', '.join(str(f) for f in (train, valid, test) if f is not None), **kwargs)

    @classmethod
    def from_kinetics(cls,
        *csvs, # Kinetics CSV files (`label,youtube_id,time_start,time_end,split`), e.g. train.csv and validate.csv
        root=None, # Data folder: `{youtube_id}_{start:06d}_{end:06d}.mp4` files, flat or in class folders
        **kwargs # `VideoAnnotations` arguments (`on_error`, `splits`)
    ) -> VideoAnnotations:
        "Kinetics-400/600/700 annotation CSVs; each row's `split` column gives its split"
        if not csvs: raise ValueError("from_kinetics needs at least one CSV file (train.csv, validate.csv, ...).")
        return cls([r for f in csvs for r in read_kinetics_csv(f, root=root)], root, source=', '.join(map(str, csvs)), **kwargs)

    @classmethod
    def from_ssv2(cls,
        train, # something-something-v2-train.json
        valid=None, # something-something-v2-validation.json
        root=None, # Data folder: `{id}.webm` files (or frame folders named by id)
        labels=None, # something-something-v2-labels.json: every template must be one of its 174 classes
        test=None, # something-something-v2-test.json (ids only: split 'test')
        **kwargs # `VideoAnnotations` arguments (`on_error`, `splits`)
    ) -> VideoAnnotations:
        "Something-Something v2 JSON files; the class is the template without its brackets"
        recs = [r for fn,s in ((train,'train'), (valid,'valid'), (test,'test')) if fn is not None
                for r in read_ssv2_json(fn, split=s, labels=labels, root=root)]
        return cls(recs, root, source=', '.join(str(f) for f in (train, valid, test) if f is not None), **kwargs)

# ---------------------------------------------------------------------------------------------------------------------
# Readers: annotation file -> `AnnotationRecord`s

_HMDB_RE = re.compile(r'^(.+)_test_split(\d)\.txt$')
_HMDB_TAGS = {'0': 'unused', '1': 'train', '2': 'valid'}

def read_hmdb51_splits(
    split_dir, # Folder of `<class>_test_split<N>.txt` files
    split:int=1, # Official split 1, 2 or 3
) -> list:
    "`AnnotationRecord`s (`<class>/<video>`, class, split) from HMDB51's split files (tags 0 unused, 1 train, 2 test)"
    if split not in (1, 2, 3): raise ValueError(f"HMDB51 has splits 1, 2 and 3, not {split!r}: pass split=1, 2 or 3.")
    split_dir = Path(split_dir)
    if not split_dir.is_dir(): raise FileNotFoundError(f"{split_dir}: HMDB51 split folder not found. Extract test_train_splits.rar "
                                                       "(testTrainMulti_7030_splits) and pass its folder.")
    fns = sorted(f for f in split_dir.iterdir() if (m := _HMDB_RE.match(f.name)) and m.group(2)==str(split))
    if not fns: raise FileNotFoundError(f"{split_dir}: no `<class>_test_split{split}.txt` files in it: is this HMDB51's split folder?")
    recs = []
    for f in fns:
        cls = _HMDB_RE.match(f.name).group(1)
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip(): continue
            parts = line.split()
            if len(parts)!=2 or parts[1] not in _HMDB_TAGS:
                raise ValueError(f"{f}:{i}: expected '<video> <0|1|2>', got {line.strip()!r}.")
            recs.append(AnnotationRecord(f'{cls}/{parts[0]}', cls, _HMDB_TAGS[parts[1]], f'{f}:{i}'))
    return recs

def _read_classes(classes, root=None) -> dict|None:
    "Integer label -> name, from a list of names or a file of 'name' or 'index name' lines"
    if classes is None: return None
    if isinstance(classes, (str, Path)):
        f = _annotation_file(classes, root)
        lines = [l.split() for l in f.read_text().splitlines() if l.strip()]
        if all(len(l)>=2 and l[0].isdigit() for l in lines): return {int(l[0]): ' '.join(l[1:]) for l in lines}
        return {i: ' '.join(l) for i,l in enumerate(lines)}
    return dict(enumerate(classes))

def _int(s):
    try: return int(s)
    except ValueError: return None

def read_path_label_list(
    fn, # A list file: 'path label' (or mmaction2's 'frame_dir n_frames label') a line; 'path' alone takes the parent folder as label
    split:str='train', # The split of its entries
    classes=None, # Names for integer labels: a list or a file (see `VideoAnnotations.from_list`)
    root=None, # Where to look for `fn` (and `classes`) when they are not found as given
) -> list:
    "`AnnotationRecord`s from a 'path label' list file (mmaction2 / PyTorchVideo / UCF101 style)"
    f, split, names = _annotation_file(fn, root), _norm_split(split, fn), _read_classes(classes, root)
    rows = []
    for i, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'): continue
        parts, src = line.split(), f'{f}:{i}'
        if len(parts)>3: raise ValueError(f"{src}: expected 'path label' (or 'path n_frames label'), got {len(parts)} fields: "
                                          f"{line.strip()!r}. Paths with spaces are not supported: rename them.")
        if len(parts)==1:
            parent = Path(parts[0]).parent.name
            if not parent: raise ValueError(f"{src}: {parts[0]!r} has no label and no class folder to take it from.")
            rows.append((parts[0], parent, src, True)); continue
        rows.append((parts[0], parts[-1], src, False))
    listed = [l for _,l,_,folder in rows if not folder]
    as_int = bool(listed) and all(_int(l) is not None for l in listed)  # all-integer labels are class indices
    recs = []
    for p, l, src, folder in rows:
        lbl = _int(l) if as_int and not folder else l
        if names is not None and isinstance(lbl, int):
            if lbl not in names: raise ValueError(f"{src}: label {lbl} is not in the class list {classes} "
                                                  f"(it has {min(names)}..{max(names)}): is the list 0- or 1-based?")
            lbl = names[lbl]
        recs.append(AnnotationRecord(p, lbl, split, src))
    return recs

def _guess_split(fn) -> str|None:
    n = Path(fn).stem.lower()
    return next((s for k,s in (('train','train'), ('val','valid'), ('test','test')) if k in n), None)

def kinetics_name(
    youtube_id:str, # The row's `youtube_id`
    start, # `time_start` in seconds
    end, # `time_end` in seconds
    ext:str='.mp4', # The extension of the clip files
) -> str:
    "The clip file name of a Kinetics row: `{youtube_id}_{start:06d}_{end:06d}.mp4`"
    return f'{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}{ext}'

def read_kinetics_csv(
    fn, # A Kinetics CSV: header `label,youtube_id,time_start,time_end,split` (label absent in test files)
    split:str=None, # The split of rows without a `split` column (default: from the file name: train/val/test)
    root=None, # Where to look for `fn` when it is not found as given
) -> list:
    "`AnnotationRecord`s (`{youtube_id}_{start:06d}_{end:06d}.mp4`, label, split) from a Kinetics annotation CSV"
    f = _annotation_file(fn, root)
    with open(f, newline='') as fh:
        rd = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in (rd.fieldnames or [])}
        need = {'youtube_id', 'time_start', 'time_end'}
        if not need <= set(cols):
            raise ValueError(f"{f}: a Kinetics CSV needs the columns label,youtube_id,time_start,time_end,split; "
                             f"its header is {rd.fieldnames}.")
        default = split or _guess_split(f)
        recs = []
        for i, row in enumerate(rd, 2):
            src = f'{f}:{i}'
            try: name = kinetics_name(row[cols['youtube_id']].strip(), row[cols['time_start']], row[cols['time_end']])
            except (TypeError, ValueError): raise ValueError(f"{src}: time_start/time_end must be numbers, got {row}.") from None
            lbl = row[cols['label']].strip() if 'label' in cols and row[cols['label']] else None
            s = row[cols['split']] if 'split' in cols and row[cols['split']] else default
            if s is None: raise ValueError(f"{src}: no split column and none in the file name: pass `split=`.")
            recs.append(AnnotationRecord(f'{lbl}/{name}' if lbl else name, lbl, _norm_split(s, src), src))
    return recs

def ssv2_class(
    template:str, # An entry's `template`, e.g. 'Pushing [something] from left to right'
) -> str:
    "Something-Something v2's class name of a template: the template without its brackets"
    return template.replace('[', '').replace(']', '')

def read_ssv2_json(
    fn, # A Something-Something v2 annotation JSON: a list of {'id', 'template', 'label', 'placeholders'}
    split:str='train', # The split of its entries
    labels=None, # something-something-v2-labels.json ({class: index}): every class must be in it
    root=None, # Where to look for `fn` (and `labels`) when not found as given
    ext:str='.webm', # The extension of the video files
) -> list:
    "`AnnotationRecord`s (`{id}.webm`, class, split) from a Something-Something v2 JSON file"
    f, split = _annotation_file(fn, root), _norm_split(split, fn)
    try: entries = json.loads(f.read_text())
    except json.JSONDecodeError as e: raise ValueError(f"{f}: not valid JSON ({e}).") from None
    if not isinstance(entries, list): raise ValueError(f"{f}: expected a JSON list of {{'id', 'template', ...}} entries.")
    known = set(json.loads(_annotation_file(labels, root).read_text())) if labels is not None else None
    recs = []
    for i, e in enumerate(entries):
        src = f'{f}[{i}]'
        if not isinstance(e, dict) or 'id' not in e: raise ValueError(f"{src}: an entry without 'id': {e!r}.")
        lbl = ssv2_class(e['template']) if 'template' in e else None
        if lbl is not None and known is not None and lbl not in known:
            raise ValueError(f"{src}: class {lbl!r} is not in {labels}: are these files from the same release?")
        recs.append(AnnotationRecord(f"{e['id']}{ext}", lbl, split, src))
    return recs

# ---------------------------------------------------------------------------------------------------------------------
# UCF101

def _find_ucf_list(path, name) -> Path:
    "The split list `name` in `path`, `path/ucfTrainTestlist` or beside `path`"
    path = Path(path)
    cands = [path/name, path/'ucfTrainTestlist'/name, path.parent/'ucfTrainTestlist'/name]
    for f in cands:
        if f.exists(): return f
    raise FileNotFoundError(f"UCF101 split list {name} not found in {', '.join(str(c.parent) for c in cands)}. Get the "
                            "official lists (UCF101TrainTestSplits-RecognitionTask.zip from the UCF101 site) and extract "
                            "them there (folder `ucfTrainTestlist`)")

def _ucf_list_keys(f, split) -> set:
    "Keys of the videos listed in UCF101 split file `f` ('Class/v_Class_gXX_cYY.avi [label]' lines)"
    return {_ucf_key(r.rel) for r in read_path_label_list(f, split=split)}

def ucf101_splits(path, # Folder holding `trainlist0N.txt`/`testlist0N.txt` (or `ucfTrainTestlist/`)
                  fold=1, # Official split 1, 2 or 3
                 ):
    "Splitter `items -> (train_idxs, valid_idxs)` from the official UCF101 train/test lists of `fold`"
    if fold not in (1, 2, 3): raise ValueError(f"UCF101 has folds 1, 2 and 3, not {fold!r}: pass fold=1, 2 or 3.")
    trf, tef = _find_ucf_list(path, f'trainlist0{fold}.txt'), _find_ucf_list(path, f'testlist0{fold}.txt')
    train, test = _ucf_list_keys(trf, 'train'), _ucf_list_keys(tef, 'test')
    def _inner(items):
        tr, va, miss = [], [], []
        for i, o in enumerate(items):
            k = _ucf_key(o)
            (tr if k in train else va if k in test else miss).append(i)
        if miss: raise ValueError(f"{len(miss)} of {len(items)} items are in neither {trf} nor {tef}, e.g. {items[miss[0]]}: "
                                  "are these UCF101 videos (or frame folders named after them)?")
        return L(tr), L(va)
    return _inner

_UCF_RE = re.compile(r'^v_(.+)_g(\d+)_c(\d+)$', re.IGNORECASE)

def _ucf_match(path):
    "The `_UCF_RE` match of the name of `path` (a video file's stem, a frame folder's name), or None"
    p = Path(path)
    return _UCF_RE.match(p.stem if p.suffix.lower() in VIDEO_EXTS else p.name)

def ucf101_named(path) -> bool:
    "Whether `path` (a video file or frame folder) has a UCF101-style name `v_Class_gXX_cYY`"
    return _ucf_match(path) is not None

def ucf101_group(path):
    "Group id `Class_gXX` of a UCF101-style name `v_Class_gXX_cYY` (a video file or frame folder)"
    m = _ucf_match(path)
    if m is None: raise ValueError(f"{path}: not a UCF101-style name `v_<Class>_g<XX>_c<YY>`; pass "
                                   "`GroupSplitter(group_func=...)` a function returning the group of an item")
    return f'{m.group(1)}_g{m.group(2)}'

def GroupSplitter(valid_pct=0.2,           # Fraction of the groups in the validation set
                  seed=None,               # Random seed (None: follows `set_seed`)
                  group_func=ucf101_group, # item -> group id; by default the UCF101 group, or the file itself when no name is UCF101-style
                 ):
    "Split `items` at random by group, so the items of one group never straddle train and valid"
    # With the default `group_func`: when every item is named `v_<Class>_g<XX>_c<YY>` the groups are UCF101's (clips cut
    # from one video share a group); when none is, each item is its own group (an ordinary folder of videos splits by
    # file); a mix of the two is an error, since the split would silently ignore the groups of some items.
    if not 0 < valid_pct < 1: raise ValueError(f"valid_pct must be between 0 and 1 (a fraction of the groups), not {valid_pct}")
    def _inner(items):
        items = list(items)
        if group_func is ucf101_group:
            ucf = [ucf101_named(o) for o in items]
            if all(ucf): groups = [ucf101_group(o) for o in items]
            elif not any(ucf): groups = list(range(len(items)))
            else:
                good,bad = items[ucf.index(True)],items[ucf.index(False)]
                raise ValueError(f"{sum(ucf)} of {len(items)} items have UCF101-style names `v_<Class>_g<XX>_c<YY>` (e.g. {good}) "
                                 f"and the others do not (e.g. {bad}): name them all one way, or pass `GroupSplitter(group_func=...)` "
                                 "a function returning the group of an item (`group_func=str` splits by file)")
        else: groups = [group_func(o) for o in items]
        uniq = sorted(set(groups), key=str)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        perm = torch.randperm(len(uniq), generator=g).tolist()
        n_valid = min(len(uniq)-1, max(1, round(valid_pct*len(uniq)))) if len(uniq) > 1 else 0
        valid = {uniq[i] for i in perm[:n_valid]}
        return L(i for i, o in enumerate(groups) if o not in valid), L(i for i, o in enumerate(groups) if o in valid)
    return _inner
