"The command line, as a user runs it, in fast mode (tiny data, one epoch)"
import os, subprocess, sys
import pytest
from fastai.vision.all import load_learner
from PIL import Image
from conftest import REPO

def _run(args, tmp_path, timeout=600):
    env = {**os.environ, 'FASTAI_SEQ_FAST': '1', 'MPLBACKEND': 'Agg'}
    r = subprocess.run([sys.executable, '-m', 'fastai_seq', *args, '--out', str(tmp_path/'out')], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=timeout)
    assert r.returncode==0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def test_forecast_command(tmp_path):
    out = _run(['forecast'], tmp_path)
    assert 'Validation metrics' in out and 'mse' in out and 'ssim' in out
    o = tmp_path/'out'
    assert (o/'model.pkl').exists() and Image.open(o/'predictions.png').size[0] > 200
    gif = Image.open(o/'prediction.gif')
    assert gif.n_frames == 20  # 10 input frames, then 10 predicted
    learn = load_learner(o/'model.pkl')
    assert learn.arch == 'convgru'

@pytest.mark.slow
def test_classify_command(tmp_path):
    out = _run(['classify', '--arch', 'frames_mean'], tmp_path)
    assert 'accuracy' in out and 'video accuracy' in out
    o = tmp_path/'out'
    assert (o/'model.pkl').exists() and (o/'results.png').exists()
    assert len(list((o/'motion_videos').glob('*/*.mp4'))) == 32

def test_bad_arguments(tmp_path):
    env = {**os.environ, 'FASTAI_SEQ_FAST': '1'}
    r = subprocess.run([sys.executable, '-m', 'fastai_seq', 'forecast', '--data', 'x'], capture_output=True, text=True, env=env)
    assert r.returncode!=0 and '--data is for `classify`' in r.stderr
    r = subprocess.run([sys.executable, '-m', 'fastai_seq', 'dance'], capture_output=True, text=True, env=env)
    assert r.returncode!=0 and "Unknown task 'dance'" in r.stderr
