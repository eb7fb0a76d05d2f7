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
    from fastai_seq.datasets import MovingMNIST
    test = MovingMNIST(n_in=10, n_out=10, seed=5).to_npy(tmp_path/'test_seq.npy', 8)  # the standard file's layout
    out = _run(['forecast', '--test', str(test)], tmp_path)
    assert 'Validation metrics' in out and 'mse' in out and 'ssim' in out
    # the report beside the two baselines, per horizon step, on the validation set and on the test file
    assert out.count('copy last') >= 2 and out.count('blank') >= 2 and 'per horizon step' in out
    assert f'{test} (8 sequences, never used for training or model selection)' in out
    o = tmp_path/'out'
    assert (o/'model.pkl').exists() and Image.open(o/'predictions.png').size[0] > 200
    for png in ('horizon.png', 'horizon_test.png'): assert Image.open(o/png).size[0] > 200, png
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

def test_epoch_lines_when_not_a_terminal(capsys):
    "Output to a log or pipe: a header and one line an epoch, no progress-bar redraws; fastai's defaults come back after"
    import torch
    from fastai.learner import Learner, defaults
    from fastai.data.core import DataLoaders
    from fastai.callback.progress import ProgressCallback
    from fastai_seq.__main__ import console_logging, EpochLines
    x = torch.randn(64, 2); y = x@torch.tensor([[2.], [-1.]])
    ds = list(zip(x, y))
    before = list(defaults.callbacks)
    with console_logging():  # pytest's captured stdout is not a terminal
        assert EpochLines in defaults.callbacks and ProgressCallback not in defaults.callbacks
        learn = Learner(DataLoaders.from_dsets(ds, ds, bs=16), torch.nn.Linear(2, 1), loss_func=torch.nn.MSELoss())
        learn.fit(3, 0.1)
    assert defaults.callbacks==before
    out = capsys.readouterr().out
    assert '\r' not in out and '\x1b' not in out
    lines = out.strip().split('\n')
    assert len(lines)==4 and lines[0].split()==['epoch', 'train_loss', 'valid_loss', 'time']
    assert [l.split()[0] for l in lines[1:]]==['0', '1', '2'] and float(lines[3].split()[2]) < float(lines[1].split()[2])
    with console_logging(lines=False): assert ProgressCallback in defaults.callbacks

@pytest.mark.slow
def test_classify_pretrained_command(tmp_path, monkeypatch):
    "`classify --pretrained` fine-tunes with the arch's recipe from the weights in the torch hub cache (a fake one: no download)"
    import torch, torchvision
    from fastai.data.transforms import Normalize
    ckpt = tmp_path/'torch'/'hub'/'checkpoints'; ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt/'resnet18-f37072fd.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    out = _run(['classify', '--arch', 'frames_mean', '--pretrained', '--body', 'resnet18', '--size', '32', '--n-frames', '4',
                '--epochs', '1'], tmp_path)
    assert "Fine-tuning pretrained 'frames_mean' (body=resnet18, pool=concat, lr=0.002)" in out, out
    assert '1 epoch(s) frozen, then 1 unfrozen' in out and '\r' not in out and 'video accuracy' in out
    assert sum(l.split()[:1]==['epoch'] for l in out.split('\n'))==2   # fine_tune: the frozen fit, then the unfrozen one
    learn = load_learner(tmp_path/'out'/'model.pkl')
    assert learn.model.encoder.module.pool.pool=='concat'
    norm = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norm)==1 and torch.allclose(norm[0].std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
