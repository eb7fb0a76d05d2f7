"Video indexing and DataLoader workers under every start method: fork, forkserver (Python 3.14's Linux default), spawn"
import json, multiprocessing, os, subprocess, sys
from collections import Counter
from pathlib import Path
import pytest
from conftest import write_video, make_frames
from fastai_seq.data import sample_indices

HERE = Path(__file__).resolve().parent
METHODS = [m for m in ('fork', 'forkserver', 'spawn') if m in multiprocessing.get_all_start_methods()]

# Run as `python run.py METHOD VIDEOS`: the scenario in a fresh interpreter, under start method METHOD. Every process
# that probes a file (this one, an indexing pool's, a DataLoader worker) appends `pid name` to $PROBE_LOG: spawned and
# forkserver workers import this script as their main module (not as `__main__`), so the wrapper below reaches them too.
_SCRIPT = r'''
import os, sys
from pathlib import Path
import fastai_seq.video as V
_build_index = V._build_index
def logged_probe(fn, *args, **kwargs):
    with open(os.environ['PROBE_LOG'], 'a') as f: f.write(f'{os.getpid()} {Path(fn).name}\n')
    return _build_index(fn, *args, **kwargs)
V._build_index = logged_probe
if __name__ != '__main__':  # a spawned worker, or the forkserver (its workers fork from it): the wrapper is installed there
    with open(os.environ['PROBE_LOG'], 'a') as f: f.write(f'{os.getpid()} <wrapped>\n')

if __name__ == '__main__':
    import json, multiprocessing, torch
    multiprocessing.set_start_method(sys.argv[1], force=True)
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from conftest import frame_index
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, RandomSplitter
    from fastai_seq.data import VideoBlock
    from fastai_seq.files import get_video_files
    dls = DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0)).dataloaders(sys.argv[2], bs=2, num_workers=2)
    out = {'main': os.getpid(), 'vocab': list(dls.vocab), 'items': {}, 'epochs': []}
    for name, dl in (('train', dls.train), ('valid', dls.valid)): out['items'][name] = [Path(o).name for o in dl.items]
    for epoch in range(2):
        got = {}
        for name, dl in (('train', dls.train), ('valid', dls.valid)):
            got[name] = [(int(y), [frame_index(f) for f in seq]) for x, ys in dl for seq, y in zip(x, ys)]
        out['epochs'].append(got)
    print('RESULT ' + json.dumps(out))
'''

@pytest.fixture(scope='module')
def eight_videos(tmp_path_factory):
    "8 small videos in 2 class folders, named `{i}_{frames}.mp4` (12 to 19 frames; frame indices in their brightness)"
    root = tmp_path_factory.mktemp('eight')
    for i in range(8): write_video(root/f'c{i%2}'/f'{i}_{12+i}.mp4', make_frames(12+i, 32, 32, seed=i))
    return root

def _run(method, videos, tmp_path, index_dir=None):
    "The scenario under `method`, its saved index in `index_dir` (default: a folder of this test's own)"
    script, log = tmp_path/'run.py', tmp_path/'probes.txt'
    script.write_text(_SCRIPT)
    env = {**os.environ, 'PROBE_LOG': str(log), 'PYTHONPATH': os.pathsep.join([str(HERE.parent), os.environ.get('PYTHONPATH', '')]),
           'FASTAI_SEQ_INDEX_DIR': str(index_dir or tmp_path/'index')}
    if log.exists(): log.unlink()
    try: r = subprocess.run([sys.executable, str(script), method, str(videos), str(HERE)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired: pytest.fail(f"the scenario under start method {method!r} did not finish in 300 s")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith('RESULT '))[7:])
    lines = [l.split() for l in log.read_text().splitlines()] if log.exists() else []
    return res, [l for l in lines if l[1] != '<wrapped>'], {int(p) for p, n in lines if n == '<wrapped>'}

@pytest.mark.workers
def test_second_run_indexes_no_file(eight_videos, tmp_path):
    "A second process (a later run, another process of a distributed job) maps the saved index: it indexes no file"
    first, probes1, _ = _run('fork', eight_videos, tmp_path, index_dir=tmp_path/'shared')
    assert len(probes1) == 8
    second, probes2, _ = _run(METHODS[-1], eight_videos, tmp_path, index_dir=tmp_path/'shared')
    assert probes2 == [] and second['main'] != first['main']
    for a, b in zip(first['epochs'], second['epochs']):  # the same items, frames and labels (shuffled otherwise)
        assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}

def _expected(names, vocab):
    "The (label index, frame indices) of each item: uniform sampling of 4 of the frames its name declares"
    return sorted((vocab.index(f'c{int(n.split("_")[0])%2}'), sample_indices(int(n.split('_')[1][:-4]), 4, 'uniform'))
                  for n in names)

@pytest.mark.workers
@pytest.mark.parametrize('method', METHODS)
def test_each_video_probed_once_under_any_start_method(method, eight_videos, tmp_path):
    "Two epochs over train and valid with 2 workers: every file is indexed exactly once in all (in the main process)"
    res, probes, wrapped = _run(method, eight_videos, tmp_path)
    assert bool(wrapped - {res['main']}) == (method != 'fork')  # the probes of other processes are counted (forked: inherited)
    names = sorted(f'{i}_{12+i}.mp4' for i in range(8))
    assert sorted(res['items']['train'] + res['items']['valid']) == names
    counts = Counter(n for _, n in probes)
    assert dict(counts) == {n: 1 for n in names}, f"probes under {method}: {dict(counts)}"
    assert {int(p) for p, _ in probes} == {res['main']}  # none in a worker
    for got in res['epochs']:  # the right frames, in order, with the right label, for every item of each split
        for split in ('train', 'valid'):
            assert sorted((y, idxs) for y, idxs in got[split]) == _expected(res['items'][split], res['vocab'])

# ---------------------------------------------------------------------------------------------------------------------
# What travels to the workers, and the indexing pool

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "The video index cache, emptied for the test and given back its entries after it; saved indexes go to a folder of the test's"
    import fastai_seq.video as V
    monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', str(tmp_path/'index'))
    saved = dict(V._CACHE)
    V._CACHE.clear()
    yield V._CACHE
    V._CACHE.clear(); V._CACHE.update(saved)

def _dls(path, nw, **kw):
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, GrandparentSplitter
    from fastai_seq.data import VideoBlock
    from fastai_seq.files import get_video_files
    return DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=GrandparentSplitter(), **kw).dataloaders(path, bs=2, num_workers=nw)

@pytest.mark.parametrize('saved', [True, False])
def test_index_travels_only_to_workers(video_folder, cache, saved, monkeypatch):
    "The index goes with the loader to spawn/forkserver workers (multiprocessing's pickler) but not into a plain pickle or an export"
    import pickle, cloudpickle
    from multiprocessing.reduction import ForkingPickler
    from fastai_seq.video import _cache_key, _khash, _STATS, _STORES, _MORE
    if not saved: monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', 'off')
    dl = _dls(video_folder, 2).train
    dl.before_iter()  # what `iter(dl)` does in the main process before its workers start
    keys = {_cache_key(o) for o in dl.items}
    # saved: the workers map the saved index file; not saved: the compact entries travel
    ship = dl._vindex
    hs = {_khash(k) for k in keys}  # compact entries, in the saved file or in memory; expanded when a file is read
    assert len(keys) == 6 and len(ship) == 6 and (hs <= set(_MORE) if not saved else len(_STORES[ship.stores[0]]) == 6)
    assert (len(ship.stores), set(ship.entries)) == ((1, set()) if saved else (0, {_khash(k) for k in keys}))
    shipped = ForkingPickler.dumps(dl)
    for dump in (pickle.dumps, cloudpickle.dumps):  # a saved loader; `learn.export` (cloudpickle)
        assert len(pickle.loads(dump(dl))._vindex) == 0
    assert len(shipped) > len(pickle.dumps(dl))
    assert not hasattr(dl.new(dl.dataset.new_empty()), '_vindex')  # what `learn.export` pickles: a new, empty loader
    cache.clear()
    got = pickle.loads(shipped)  # as a worker unpickles it: it maps the saved index or keeps the entries; its copy holds nothing
    assert len(got._vindex) == 0 and (len(_STORES) == 1 if saved else {_khash(k) for k in keys} <= set(_MORE))
    n = _STATS['indexed']
    items = [got.do_item(i) for i in range(6)]  # what a worker does with each item
    assert [x.shape[:2] for x, _ in items] == [(4, 3)]*6 and _STATS['indexed'] == n  # read without indexing anything

@pytest.mark.workers
def test_indexing_pool_sized_by_workers(tmp_path, cache, monkeypatch):
    "No indexing pool (nor any indexing before the pass) without workers; a pool of 2 processes with 2 workers, when not saved"
    import fastai_seq.video as V
    for split, n in (('train', 16), ('valid', 2)):
        for i in range(n): write_video(tmp_path/split/f'c{i%2}'/f'{i}.mp4', make_frames(5, 16, 16, seed=i))
    real, calls = V.parallel, []
    def parallel(f, items, *args, n_workers=0, **kw):
        calls.append((len(items), n_workers))
        return real(f, items, *args, n_workers=n_workers, **kw)
    monkeypatch.setattr(V, 'parallel', parallel)
    dl = _dls(tmp_path, 0).train
    cache.clear()  # building the `DataBlock` read one item
    n = V._STATS['indexed']
    dl.before_iter()
    assert calls == [] and V._STATS['indexed'] == n and len(cache) == 0  # nothing before the pass: each file when read
    for epoch in range(2):
        for _ in dl: pass
        assert V._STATS['indexed'] == n + 16 and len(cache) == 16  # in this process, once each
    dl = _dls(tmp_path, 2).train
    cache.clear()
    assert dl.num_workers == 1 and dl.fake_l.num_workers == 2  # fastai's main-process `num_workers` is not the count
    dl.before_iter()  # the second pass without workers saved what the first indexed: nothing to index
    assert calls == [] and V._STATS['indexed'] == n + 16 and len(dl._vindex) == 16
    monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', str(tmp_path/'other_index'))  # no saved index
    cache.clear()
    dl.before_iter()
    assert calls == [(16, 2)] and V._STATS['indexed'] == n + 16  # by the pool's 2 processes
    assert [len(s) for s in V._STORES.values()] == [16] and V._MORE == {}  # saved

def test_seq_split_pickles_for_workers(frame_folder):
    "`SeqSplit`'s `get_x`/`get_y` reach spawn/forkserver workers: fastai makes a callable without `__name__` unpicklable"
    import pickle
    from multiprocessing.reduction import ForkingPickler
    from fastai.vision.all import DataBlock, GrandparentSplitter
    from fastai_seq.data import SeqBlock, SeqSplit
    split = SeqSplit(n_in=3, n_out=2)
    dls = DataBlock(blocks=(SeqBlock, SeqBlock), get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                    get_x=split.get_x, get_y=split.get_y, splitter=GrandparentSplitter()).dataloaders(frame_folder, bs=2)
    ds = pickle.loads(ForkingPickler.dumps(dls.valid.dataset))  # what a spawned worker receives
    (x, y), (x0, y0) = ds[0], dls.valid.dataset[0]
    assert [len(x), len(y)] == [3, 2] and all((a.tobytes(), b.tobytes()) == (c.tobytes(), d.tobytes()) for a, b, c, d in
                                              ((x[0], y[0], x0[0], y0[0]), (x[2], y[1], x0[2], y0[1])))
