"""A plain fastai learner behaves exactly as without `import fastai_seq.all` (issue 19, item 1), checked with values.

Two fresh interpreters run the same script with the same seeds (one thread, `num_workers=0`, deterministic torch): one
without the import, one with it. For a tabular, an image (with `aug_transforms()` and `Normalize`: `TensorImage.lighting`/
`hsv` and the affine code fastai_seq touches) and a text learner, each trains one epoch of a few batches in float32, with
`to_fp16()` and with `to_bf16()`, then `validate()`s and `get_preds()`; the training losses, the recorded metrics, the
validation values and the predictions must be equal bit for bit. Again under `ONEDNN_MAX_CPU_ISA=AVX2` (no native
bfloat16 or float16, whatever the CPU). And a 2-process gloo run of a plain tabular learner under `distrib_ctx()`.
"""
import os, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import REPO

SCRIPT = r'''
import os, sys, random, warnings
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
from fastai.vision.all import *
from fastai.tabular.all import *
from fastai.text.all import *
defaults.cpus = 1   # tokenising in this process
if sys.argv[1]=='1': import fastai_seq.all
import fastcore.basics
fastcore.basics.print = lambda *a, **k: None  # no recorder table on stdout
out, tmp = sys.argv[2], Path(sys.argv[3])

def seed(s=0):
    random.seed(s); np.random.seed(s); torch.manual_seed(s)

def tabular():
    seed()
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'a': rng.normal(size=96), 'b': rng.normal(size=96), 'c': rng.integers(0, 4, 96).astype(str)})
    df['y'] = np.where(df.a+df.b+(df.c=='1')>0, 'p', 'n')
    dls = TabularDataLoaders.from_df(df, path=tmp, cat_names=['c'], cont_names=['a','b'], y_names='y', y_block=CategoryBlock(),
                                     procs=[Categorify, Normalize], valid_idx=list(range(64, 96)), bs=16, num_workers=0)
    return tabular_learner(dls, layers=[16, 8], n_out=2, metrics=accuracy)  # get_c: [vocab, 2] with a string y

def image():
    seed()
    d = tmp/'images'
    rng = np.random.default_rng(0)
    fns, labels = [], []
    for i in range(32):
        lbl = 'bright' if i%2 else 'dark'
        a = np.clip(rng.normal(150 if i%2 else 90, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
        fn = d/f'{i:02d}.png'
        if not fn.exists(): d.mkdir(parents=True, exist_ok=True); PILImage.create(a).save(fn)
        fns.append(fn); labels.append(lbl)
    dls = ImageDataLoaders.from_lists(d, fns, labels, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=8, num_workers=0,
                                      batch_tfms=[*aug_transforms(size=32, min_scale=0.8), Normalize.from_stats(*imagenet_stats)])
    seed()
    model = nn.Sequential(ConvLayer(3, 8, stride=2), ConvLayer(8, 16, stride=2), nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(16, 2))
    return Learner(dls, model, metrics=accuracy)

def text():
    seed()
    rng = np.random.default_rng(0)
    words = {'pos': 'good great fine nice happy'.split(), 'neg': 'bad awful poor sad wrong'.split()}
    filler = 'the a movie was and it is this'.split()
    rows = []
    for i in range(48):
        lbl = 'pos' if i%2 else 'neg'
        rows.append((' '.join(rng.choice(words[lbl]+filler, 12)), lbl))
    df = pd.DataFrame(rows, columns=['text', 'label'])
    dls = TextDataLoaders.from_df(df, path=tmp, text_col='text', label_col='label', valid_pct=0.25, seed=0, bs=8,
                                  tok_tfm=BaseTokenizer(), seq_len=16, num_workers=0)
    seed()
    config = {**awd_lstm_clas_config, 'emb_sz': 16, 'n_hid': 32, 'n_layers': 2}
    return text_classifier_learner(dls, AWD_LSTM, pretrained=False, config=config, metrics=accuracy)

res = {}
for app in sys.argv[4].split(','):
    for prec in ('fp32', 'fp16', 'bf16'):
        learn = globals()[app]()
        if prec=='fp16': learn = learn.to_fp16()
        if prec=='bf16': learn = learn.to_bf16()
        seed(1)
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            with learn.no_bar(): learn.fit(1, 1e-2)
            losses, values = list(learn.recorder.losses), list(learn.recorder.values)
            v = learn.validate()
            preds, targs = learn.get_preds()
        k = f'{app}_{prec}'
        res[k+'_losses'] = torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses])
        res[k+'_values'] = torch.tensor(values, dtype=torch.float64)
        res[k+'_validate'] = torch.tensor([float(x) for x in v], dtype=torch.float64)
        res[k+'_preds'], res[k+'_targs'] = preds, targs
        res[k+'_warnings'] = sorted({f'{w.category.__name__}: {w.message}' for w in ws
                                     if issubclass(w.category, UserWarning) and 'fastai' in str(w.filename)+str(w.message).lower()
                                     or 'float32' in str(w.message)})
        ac = getattr(getattr(learn, 'mixed_precision', None), 'autocast', None)
        res[k+'_autocast'] = (type(ac).__name__, str(getattr(ac, 'fast_dtype', None)), getattr(ac, '_enabled', None))
torch.save(res, out)
'''

APPS = ('tabular', 'image', 'text')

def run_both(tmp:Path, env:dict) -> tuple:
    "The script's results without and with the import (dicts of tensors, warnings)"
    outs = []
    for with_import in ('0', '1'):
        fn = tmp/f'res{with_import}.pt'
        r = subprocess.run([sys.executable, '-c', SCRIPT, with_import, str(fn), str(tmp), ','.join(APPS)], cwd=REPO,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1', **env})
        assert r.returncode==0, f"{'with' if with_import=='1' else 'without'} the import: exit {r.returncode}\n{r.stderr[-4000:]}"
        outs.append(torch.load(fn, weights_only=False))
    return tuple(outs)

@pytest.fixture(scope='module')
def native(tmp_path_factory): return run_both(tmp_path_factory.mktemp('plain'), {})

@pytest.fixture(scope='module')
def avx2(tmp_path_factory): return run_both(tmp_path_factory.mktemp('plain_avx2'), {'ONEDNN_MAX_CPU_ISA': 'AVX2'})

def compare(without:dict, with_:dict, app:str, prec:str) -> list:
    "What differs between the two runs for one learner, one line each"
    bad = []
    for what in ('losses', 'values', 'validate', 'preds', 'targs'):
        a, b = without[f'{app}_{prec}_{what}'], with_[f'{app}_{prec}_{what}']
        if a.shape!=b.shape or a.dtype!=b.dtype: bad.append(f"{what}: {tuple(a.shape)} {a.dtype} without, {tuple(b.shape)} {b.dtype} with")
        elif not torch.equal(a, b):
            d = (a.double()-b.double()).abs()
            bad.append(f"{what}: differ (max |diff| {d.max().item():.3g}; without {a.flatten()[:4].tolist()}, with {b.flatten()[:4].tolist()})")
    for what in ('warnings', 'autocast'):
        a, b = without[f'{app}_{prec}_{what}'], with_[f'{app}_{prec}_{what}']
        if a!=b: bad.append(f"{what}: {a!r} without the import, {b!r} with it")
    return bad

@pytest.mark.parametrize('prec', ('fp32', 'fp16', 'bf16'))
@pytest.mark.parametrize('app', APPS)
@pytest.mark.parametrize('isa', ('native', 'avx2'))
def test_plain_learner_unchanged(request, isa, app, prec):
    "Losses, metrics, validation and predictions of a plain fastai learner are the same bits with and without the import, on this CPU and under ONEDNN_MAX_CPU_ISA=AVX2 (no native low precision)"
    bad = compare(*request.getfixturevalue(isa), app, prec)
    where = ', ONEDNN_MAX_CPU_ISA=AVX2' if isa=='avx2' else ''
    assert not bad, f"{app} learner, {prec}{where}, with `import fastai_seq.all`:\n" + '\n'.join(bad)

DIST = r'''
import json, os, sys, warnings
warnings.simplefilter('ignore')
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from fastai.tabular.all import *
from fastai.distributed import *
if sys.argv[1]=='1': import fastai_seq.all
import fastcore.basics
fastcore.basics.print = lambda *a, **k: None
rng = np.random.default_rng(0)
df = pd.DataFrame({'a': rng.normal(size=96), 'b': rng.normal(size=96), 'c': rng.integers(0, 4, 96).astype(str)})
df['y'] = np.where(df.a+df.b+(df.c=='1')>0, 'p', 'n')
# 31 validation rows: two ranks get 16 each, one of them padded with a repeated row
dls = TabularDataLoaders.from_df(df, cat_names=['c'], cont_names=['a','b'], y_names='y', y_block=CategoryBlock(),
                                 procs=[Categorify, Normalize], valid_idx=list(range(64, 95)), bs=8, num_workers=0)
torch.manual_seed(0)
learn = tabular_learner(dls, layers=[16, 8], n_out=2, metrics=accuracy)
try:
    with learn.no_bar(), learn.distrib_ctx(): v = [float(x) for x in learn.validate()]
    res = {'validate': v}
except Exception as e: res = {'error': f'{type(e).__name__}: {e}'.replace('\n', ' ')}
print('RESULT' + json.dumps({'rank': os.environ.get('RANK'), **res}))
'''

def _free_port() -> int:
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _dist_run(script:Path, with_import:str, nproc:int) -> list:
    "The `RESULT` dicts of the ranks (one process without torchrun when nproc is 1)"
    import json, re
    launch = ['-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_port', str(_free_port())] if nproc>1 else []
    r = subprocess.run([sys.executable, *launch, str(script), with_import], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'})
    # the ranks print at the same time: two results can share a line (torchrun passes their output through unbuffered)
    res = [json.loads(m) for m in re.findall(r'RESULT(\{[^{}]*\})', r.stdout + '\n' + r.stderr)]
    assert len(res)==nproc, f"exit {r.returncode}, {len(res)} of {nproc} results:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return res

@pytest.mark.slow
def test_distributed_plain_tabular_cpu(tmp_path):
    """A plain tabular learner's `validate()` under `distrib_ctx()` in a 2-process gloo group (CPU).

    fastai alone cannot run there: its `DistributedTrainer.before_fit` fails on a CPU-only group (fastai 2.8.12:
    "AttributeError: 'TabularModel' object has no attribute 'device'", accelerate prepares no CPU model), so "as
    without the import" cannot mean fastai's own distributed values. It means: the one-process values of plain fastai
    (no import, no distributed group), which is also API.md §8's promise ("a distributed `validate()` gives the
    one-process values exactly"). Should a later fastai run on gloo by itself, its values must equal ours too.
    """
    pytest.importorskip('accelerate')
    script = tmp_path/'dist_tabular.py'; script.write_text(DIST)
    ref = _dist_run(script, '0', 1)[0]
    assert 'validate' in ref, ref
    plain = _dist_run(script, '0', 2)
    ours = _dist_run(script, '1', 2)
    bad = [f"rank {r['rank']}: {r.get('error')}" for r in ours if 'validate' not in r]
    # the same numbers, summed across the ranks in float64 where one process sums in float32: equal to 1e-6
    close = lambda a, b: len(a)==len(b) and all(abs(x-y) <= 1e-6*max(1., abs(y)) for x,y in zip(a, b))
    bad += [f"rank {r['rank']}: validate() {r['validate']} with the import, one process without it {ref['validate']}"
            for r in ours if 'validate' in r and not close(r['validate'], ref['validate'])]
    bad += [f"rank {r['rank']}: fastai alone gives {r['validate']}, with the import {o.get('validate')}"
            for r,o in zip(plain, ours) if 'validate' in r and r['validate']!=o.get('validate')]
    assert not bad, '\n'.join(bad) + f"\n(fastai alone on this group: {[r.get('error') or r['validate'] for r in plain]})"
