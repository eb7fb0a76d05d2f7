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
