import subprocess, sys, zipfile
from pathlib import Path
import pytest
from setuptools import find_packages
from conftest import REPO

def test_wheel_holds_every_subpackage(tmp_path):
    "The built wheel contains every package setuptools finds, with their modules"
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(REPO), '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode==0, r.stderr
    whl = next(tmp_path.glob('fastai_seq-*.whl'))
    names = set(zipfile.ZipFile(whl).namelist())
    pkgs = find_packages(str(REPO), include=['fastai_seq', 'fastai_seq.*'])
    assert {'fastai_seq', 'fastai_seq.models'} <= set(pkgs)
    for p in pkgs:
        for f in (REPO/p.replace('.', '/')).glob('*.py'):
            assert f'{p.replace(".", "/")}/{f.name}' in names, f'{f} missing from {whl.name}'
    assert any(n.endswith('entry_points.txt') for n in names)

def test_all_exports_the_public_api():
    import fastai_seq.all as a
    for name in ['ImageTuple', 'ImageSeq', 'SeqBlock', 'VideoBlock', 'SeqSplit', 'load_mnist_digits', 'MovingMNIST',
                 'moving_mnist_dls', 'make_moving_videos', 'get_video_files', 'extract_frames', 'videos_to_frames', 'unrar',
                 'ucf101_splits', 'TimeDistributed', 'StackUnstack', 'UnstackStack', 'StackLoss', 'list_archs', 'register_arch',
                 'create_seq_model', 'seq_learner', 'save_gif', 'seq_mse', 'seq_mae', 'ssim', 'psnr', 'mse_frame', 'mae_frame',
                 'TopKAccuracy']:
        assert hasattr(a, name), name
    from pathlib import Path as P
    assert hasattr(P, 'ls_sorted')

def test_version():
    import fastai_seq
    assert fastai_seq.__version__.count('.') == 2

_EXTRAS = ('accelerate', 'timm', 'wandb', 'huggingface_hub', 'transformers', 'rarfile', 'torchcodec', 'toml')

def test_imports_and_trains_without_extras():
    "No extra installed (each blocked in `sys.modules`): the package imports, a learner trains, an extra's feature names its install"
    code = f"""
import sys
for m in {_EXTRAS!r}: sys.modules[m] = None   # `import m` fails and `importlib.util.find_spec(m)` is None, as when not installed
import warnings
from fastai.vision.all import *
before = list(warnings.filters)
from fastai_seq.all import *
assert [f for f in warnings.filters if f not in before]==[], 'the import changed the warning filters'
assert 'fastai.distributed' not in sys.modules
dls = moving_mnist_dls(n_in=2, n_out=2, n_train=4, n_valid=4, bs=2, size=32)
learn = seq_learner(dls, 'convgru', szs=(4,8), stem=(4,))
learn.fit(1)
assert learn.recorder.values
import fastai_seq.distributed as D
for f, args, extra in ((D.fastai_distributed, (True,), 'distributed'), (clip_spec, ('hf-hub:some/checkpoint',), 'hf'), (push_to_hub_seq, (learn, 'me/repo'), 'hub')):
    try: f(*args); raise SystemExit(f'no ImportError from {{f.__name__}}')
    except ImportError as e: assert f'fastai_seq[{{extra}}]' in str(e), e
print('ok')
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode==0 and 'ok' in r.stdout, r.stderr[-3000:]
