"""Multi-process training with `learn.distrib_ctx()` on 2 CPU processes (gloo), and the pieces of fastai_seq.distributed

The slow tests launch this very file with `torchrun --nproc_per_node 2`: `_worker` below then trains a forecaster and a
classifier in each process and writes what its rank saw to `rank<r>.json`, which the tests check.
"""
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent/'torchrun'
ACCELERATE = Path(sys.executable).parent/'accelerate'

# ------------------------------------------------------------------------------------------------ the worker process
FC = dict(n_in=4, n_out=4, n_train=40, n_valid=9, bs=4, size=32, seed=3)   # 9 validation sequences: one repeat to pad
CL_SIZE, CL_FRAMES, CL_PER_CLASS = 40, 8, 6

def _hash(x) -> str:
    "A digest of one `[0,1]` float sequence, by its uint8 pixels"
    return hashlib.sha1((x.float()*255).round().to(torch.uint8).cpu().numpy().tobytes()).hexdigest()[:16]

def _is_valid_clip(p) -> bool:
    "5 of the 24 clips are for validation: an odd count, so that `DistributedDL` pads the shards with a repeat"
    return p.stem.endswith('_5') or p.stem=='left_4'

def target_prob(inp, targ):
    "The mean probability given to the target class: a continuous metric, so a repeated sample would show"
    return inp.softmax(-1).gather(-1, targ[:, None].long()).mean()

def _worker(out:Path):
    from fastai.vision.all import (Callback, DataBlock, CategoryBlock, FuncSplitter, parent_label, Resize, set_seed,
                                   rank_distrib, num_distrib)
    from fastai.data.load import DataLoader
    from fastai.distributed import teardown_distrib, rank0_first
    from fastai.metrics import accuracy
    from fastai_seq.all import TopKAccuracy, moving_mnist_dls, seq_learner, make_moving_videos, VideoBlock, get_video_files
    from fastai_seq.datasets.moving_mnist import _stores
    from fastai_seq.distributed import on_rank0
    rank = rank_distrib()
    assert num_distrib()==2 and torch.distributed.is_available()
    state = dict(key=None)
    seen = {}
    _create_item = DataLoader.create_item
    def create_item(self, s):   # record the index of every item this process loads while a phase is being recorded
        if state['key'] is not None: seen.setdefault(state['key'], []).append(int(s))
        return _create_item(self, s)
    DataLoader.create_item = create_item

    class Spy(Callback):
        "Record the phase (for `create_item`), the training losses, and digests of the training inputs"
        order = 100
        def __init__(self, mm=None): self.mm,self.losses,self.hashes,self.mm_epochs = mm,{},{},{}
        def before_train(self): state['key'] = f'train{self.epoch}'
        def before_validate(self): state['key'] = f'valid{self.epoch}'
        def after_batch(self):
            if not self.training: return
            self.losses.setdefault(self.epoch, []).append(self.loss.item())
            self.hashes.setdefault(self.epoch, []).extend(_hash(x) for x in self.xb[0])
            if self.mm is not None: self.mm_epochs[self.epoch] = self.mm.epoch   # moved on as the pass began
        def after_fit(self): state['key'] = None

    res = {'rank': rank}
    # fastai's `rank0_first` (its dummy learner's `distrib_ctx` forms the gloo group): rank 0 runs first, then the others
    mark = out/'rank0_was_first'
    res['rank0_first'] = rank0_first(lambda: mark.touch() or 'touched' if rank==0 else mark.exists())
    # ---- forecasting: convgru on Moving MNIST, whose training set is fresh each epoch
    dls = moving_mnist_dls(**FC)
    set_seed(0)
    learn = seq_learner(dls, 'convgru', szs=(8,16,16), lr=1e-2)
    spy = Spy(_stores(dls.train.dataset)[0])
    learn.add_cb(spy)
    with learn.distrib_ctx(): learn.fit(3, 1e-2)
    res['backend'] = torch.distributed.get_backend()
    learn.remove_cb(spy)
    fc = dict(seen=seen.copy(), losses=spy.losses, hashes=spy.hashes, mm_epochs=spy.mm_epochs,
              names=['valid_loss', *[m.name for m in learn.metrics]], dist=learn.recorder.values[-1][1:])
    fc['one'] = on_rank0(learn.validate)   # rank 0 alone, the whole validation set, the same weights
    seen.clear()
    res['forecast'] = fc
    # ---- classification: frames_lstm on generated motion videos; rank 0 writes them while rank 1 waits
    vids = out/'videos'
    on_rank0(make_moving_videos, vids, n_per_class=CL_PER_CLASS, n_frames=CL_FRAMES, size=CL_SIZE, seed=0)
    res['n_videos_seen_by_rank'] = len(get_video_files(vids))
    dblock = DataBlock(blocks=(VideoBlock(n_frames=CL_FRAMES, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=FuncSplitter(_is_valid_clip), item_tfms=Resize(CL_SIZE))
    dls = dblock.dataloaders(vids, bs=4, num_workers=0)
    set_seed(0)
    learn = seq_learner(dls, 'frames_lstm', lr=3e-3, metrics=[accuracy, TopKAccuracy(k=2), target_prob])
    spy = Spy()
    learn.add_cb(spy)
    with learn.distrib_ctx(): learn.fit(4, 3e-3)
    learn.remove_cb(spy)
    cl = dict(seen=seen.copy(), losses=spy.losses, names=['valid_loss', *[m.name for m in learn.metrics]],
              dist=learn.recorder.values[-1][1:], n_train=len(dls.train_ds), n_valid=len(dls.valid_ds))
    cl['one'] = on_rank0(learn.validate)
    res['classify'] = cl
    teardown_distrib()
    (out/f'rank{rank}.json').write_text(json.dumps(res, default=lambda o: list(o) if hasattr(o, '__iter__') else float(o)))

# ------------------------------------------------------------------------------------------------------------ tests
def _launch(cmd:list, out:Path, timeout:int=420):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])]), 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'PYTHONWARNINGS': 'ignore'}
    env.pop('WORLD_SIZE', None); env.pop('RANK', None)
    r = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode==0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r

@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    "Run `_worker` in 2 gloo processes; the JSON records of rank 0 and rank 1"
    if not TORCHRUN.exists(): pytest.skip(f"torchrun not found beside {sys.executable}")
    out = tmp_path_factory.mktemp('distrib')
    _launch([str(TORCHRUN), '--nproc_per_node', '2', '--master_port', str(_free_port()), __file__, str(out)], out)
    return [json.loads((out/f'rank{r}.json').read_text()) for r in (0, 1)]

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _padded_shards(n:int, world:int=2) -> list:
    "fastai's `DistributedDL` split of `range(n)` (unshuffled): equal shards, the first items repeated at the end to pad"
    npad = -(-n//world)*world
    idxs = list(range(n)) + list(range(n))[:npad-n]
    return [idxs[r*npad//world:(r+1)*npad//world] for r in range(world)]

@pytest.mark.slow
def test_two_processes_gloo(two_ranks):
    "Both ranks finish on gloo; the classifier's videos, written by rank 0 alone, were all there for rank 1"
    assert [r['rank'] for r in two_ranks]==[0, 1]
    assert all(r['backend']=='gloo' for r in two_ranks)
    assert all(r['n_videos_seen_by_rank']==4*CL_PER_CLASS for r in two_ranks)
    assert [r['rank0_first'] for r in two_ranks]==['touched', True]

@pytest.mark.slow
@pytest.mark.parametrize('task', ['forecast', 'classify'])
def test_loss_falls(two_ranks, task):
    "The mean training loss over both ranks falls from the first epoch to the last"
    ep = lambda r,e: np.mean(r[task]['losses'][str(e)])
    n_ep = len(two_ranks[0][task]['losses'])
    first, last = np.mean([ep(r, 0) for r in two_ranks]), np.mean([ep(r, n_ep-1) for r in two_ranks])
    assert np.isfinite(first) and np.isfinite(last)
    assert last < 0.9*first, (first, last)

@pytest.mark.slow
def test_forecast_shards(two_ranks):
    "Moving MNIST: each epoch the ranks read disjoint halves of one fresh training set, and split the validation set"
    r0, r1 = (r['forecast'] for r in two_ranks)
    n_tr, n_va = FC['n_train'], FC['n_valid']
    for e in range(3):
        s0, s1 = r0['seen'][f'train{e}'], r1['seen'][f'train{e}']
        assert not set(s0) & set(s1) and sorted(s0+s1)==list(range(n_tr))
        assert [s0, s1]==_padded_shards(n_tr)
        assert [r0['seen'][f'valid{e}'], r1['seen'][f'valid{e}']]==_padded_shards(n_va)
    # the content: the ranks draw the same training set each epoch (a new one every epoch) and each reads its own half
    from fastai_seq.datasets import MovingMNIST
    mm = MovingMNIST(n_in=FC['n_in'], n_out=FC['n_out'], size=FC['size'], seed=FC['seed'])
    sets = []
    for e in range(3):
        assert r0['mm_epochs'][str(e)]==r1['mm_epochs'][str(e)]
        mm.epoch = r0['mm_epochs'][str(e)]
        full = [_hash(torch.from_numpy(mm.sequence(i, valid=False)[:FC['n_in'], None]).float()/255) for i in range(n_tr)]
        h0, h1 = r0['hashes'][str(e)], r1['hashes'][str(e)]
        assert not set(h0) & set(h1)
        assert h0==full[:n_tr//2] and h1==full[n_tr//2:]
        sets.append(set(full))
    assert not sets[0] & sets[1] and not sets[1] & sets[2]

@pytest.mark.slow
def test_classify_shards(two_ranks):
    "Video clips: disjoint training shards each epoch (padded by repeats when odd), the validation set split in two"
    r0, r1 = (r['classify'] for r in two_ranks)
    n_tr, n_va = r0['n_train'], r0['n_valid']
    assert (n_tr, n_va)==(4*CL_PER_CLASS-5, 5)
    for e in range(4):
        s0, s1 = r0['seen'][f'train{e}'], r1['seen'][f'train{e}']
        assert len(s0)==len(s1)==-(-n_tr//2)
        assert sorted(set(s0+s1))==list(range(n_tr))
        # training order is shuffled: the only overlap is the one item repeated to pad the 19 items to 2x10
        assert len(set(s0) & set(s1))==1 and len(set(s1))==len(s1)
        assert [r0['seen'][f'valid{e}'], r1['seen'][f'valid{e}']]==_padded_shards(n_va)

@pytest.mark.slow
@pytest.mark.parametrize('task', ['forecast', 'classify'])
def test_gathered_metrics_equal_one_process(two_ranks, task):
    "The validation loss and metrics gathered over the ranks equal those of rank 0 alone over the whole validation set"
    r0, r1 = (r[task] for r in two_ranks)
    assert r0['names']==(['valid_loss', 'mse', 'mae', 'ssim', 'psnr'] if task=='forecast' else
                         ['valid_loss', 'accuracy', 'top_2_accuracy', 'target_prob'])
    assert r0['dist']==pytest.approx(r1['dist'], rel=1e-6)   # every rank holds the gathered numbers
    assert r1['one'] is None
    assert r0['dist']==pytest.approx(r0['one'], rel=1e-5, abs=1e-6)
    if task=='classify':   # accuracies over 5 clips are multiples of 1/5: a padded repeat would make them sixths
        assert all(abs(v*5-round(v*5))<1e-6 for v in r0['dist'][1:3])

@pytest.mark.slow
def test_example_script_two_cpu_processes(tmp_path):
    "examples/train_distributed.py on 2 CPU processes under `accelerate launch` (torchrun when accelerate is missing)"
    script = REPO/'examples'/'train_distributed.py'
    args = ['--arch', 'convgru', '--task', 'forecast', '--epochs', '1', '--bs', '8', '--fast', '--out', str(tmp_path/'o')]
    if ACCELERATE.exists():
        # `--cpu` would start one process (accelerate leaves multi-CPU runs to mpirun); `--multi_gpu` starts 2 through
        # torch's elastic launcher, and with no GPU fastai_seq.distributed makes them a gloo group
        cmd = [str(ACCELERATE), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
               '--dynamo_backend', 'no', '--main_process_port', str(_free_port()), str(script), *args]
    elif TORCHRUN.exists(): cmd = [str(TORCHRUN), '--nproc_per_node', '2', '--master_port', str(_free_port()), str(script), *args]
    else: pytest.skip("neither accelerate nor torchrun is installed beside the interpreter")
    r = _launch(cmd, tmp_path)
    assert 'on 2 process(es)' in r.stdout
    assert r.stdout.count('Validation metrics (gathered over all processes)')==1   # rank 0 alone prints
    vals = {l.split(':')[0].strip(): float(l.split(':')[1]) for l in r.stdout.splitlines()
            if l.strip().split(':')[0] in ('valid_loss', 'mse', 'mae', 'ssim', 'psnr')}
    assert set(vals)=={'valid_loss', 'mse', 'mae', 'ssim', 'psnr'} and all(np.isfinite(v) for v in vals.values())
    assert (tmp_path/'o'/'model.pkl').stat().st_size>0 and (tmp_path/'o'/'results.png').stat().st_size>0

# ------------------------------------------------------------------------------------------------ in-process pieces
def test_no_distrib_and_on_rank0_single_process(monkeypatch):
    "`no_distrib` hides WORLD_SIZE inside and restores it; `on_rank0` runs the function in a lone process"
    from fastai.torch_core import num_distrib
    from fastai_seq.distributed import no_distrib, on_rank0
    monkeypatch.setenv('WORLD_SIZE', '1')
    with no_distrib(): assert num_distrib()==0
    assert os.environ['WORLD_SIZE']=='1'
    monkeypatch.delenv('WORLD_SIZE')
    assert on_rank0(lambda a, b=0: a+b, 1, b=2)==3

def test_real_items_counts_padding():
    "`real_items` finds the repeats `DistributedDL` adds at the end of the last rank's shard"
    from types import SimpleNamespace
    from fastai.distributed import DistributedDL
    from fastai_seq.distributed import real_items
    dl = DistributedDL.__new__(DistributedDL)
    dl.__dict__.update(rank=1, world_size=2, n=9, n_padded=10)
    def _real(rank, i, bs):   # after reading a batch of `bs` items, `i` items in all, on `rank`
        dl.rank, dl.i = rank, i
        return real_items(SimpleNamespace(dl=dl, yb=(torch.zeros(bs),)))
    # 9 items padded to 10: rank 0 reads 0..4, rank 1 reads 5..8 then a repeat of item 0
    assert [_real(0, 4, 4), _real(0, 5, 1)]==[4, 1]
    assert [_real(1, 4, 4), _real(1, 5, 1)]==[4, 0]
    assert [_real(1, 2, 2), _real(1, 4, 2), _real(1, 5, 1)]==[2, 2, 0]
    assert real_items(SimpleNamespace(yb=(torch.zeros(2),)))==None

def test_seq_metric_denormalises_inside_distributed_dl():
    "Under `distrib_ctx` `learn.dl` is a `DistributedDL`: a `SeqMetric` must still find the `Normalize` of the loader inside"
    from types import SimpleNamespace
    from fastai.data.transforms import Normalize
    from fastai.distributed import DistributedDL
    from fastai_seq.datasets import moving_mnist_dls
    from fastai_seq.metrics import MSE
    dls = moving_mnist_dls(n_in=2, n_out=2, n_train=4, n_valid=4, bs=2, size=32)
    dls.add_tfms([Normalize.from_stats(0.2, 0.3)], 'after_batch')
    m = MSE()
    one = m._stats(SimpleNamespace(dls=dls, dl=dls.valid))
    dist_ = m._stats(SimpleNamespace(dls=dls, dl=DistributedDL(dls.valid, rank=0, world_size=1)))
    assert one[0] is not None and float(one[0].flatten()[0])==pytest.approx(0.2)
    assert dist_[0] is not None and torch.equal(dist_[0], one[0]) and torch.equal(dist_[1], one[1])

def test_exported_from_all():
    "`from fastai_seq.all import *` gives the helpers and so applies the patches"
    import fastai_seq.all as A, fastai_seq.distributed as D
    assert all(getattr(getattr(A, n, None), '__module__', None)=='fastai_seq.distributed' for n in D.__all__)

def test_patches_keep_fastai_cuda_path():
    "The patched fastai callables keep their names and docs, and the CPU fallbacks are in place"
    from fastai.distributed import DistributedDL, DistributedTrainer
    import fastai.distributed as fd
    import fastai_seq.distributed as sd
    orig_init = DistributedTrainer.__init__._fastai_seq_orig
    assert DistributedDL._broadcast.__name__=='_broadcast' and DistributedTrainer.__init__.__wrapped__ is orig_init
    assert not hasattr(orig_init, '_fastai_seq_orig') and orig_init.__module__=='fastai.distributed'
    assert fd.setup_distrib.__wrapped__ is fd.setup_distrib._fastai_seq_orig
    assert sd.comm_device()==torch.device('cpu')
    import importlib
    importlib.reload(sd)   # importing again wraps fastai's functions, not our wrappers
    assert DistributedTrainer.__init__._fastai_seq_orig is orig_init
    assert DistributedTrainer.__init__.__wrapped__ is orig_init and not hasattr(orig_init, '_fastai_seq_orig')

def test_import_leaves_warning_filters_alone():
    "Importing fastai_seq (and with it fastai.distributed and accelerate) adds no process-wide warning filter"
    import subprocess, sys
    code = ("import warnings; from fastai.vision.all import *; before = list(warnings.filters)\n"
            "from fastai_seq.all import *\n"
            "new = [f for f in warnings.filters if f not in before]; assert not new, new; print('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode==0 and 'ok' in r.stdout, r.stderr[-2000:]

if __name__=='__main__': _worker(Path(sys.argv[1]))
