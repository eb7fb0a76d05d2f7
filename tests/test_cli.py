"The command line, as a user runs it, in fast mode (tiny data, one epoch): relative paths, printouts, help, models that load"
import os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from fastai.vision.all import load_learner
import fastai_seq.all  # noqa: F401 (as a user loading a model does: `learn.predict` then takes a `str` path)
from PIL import Image

def _run(args, cwd, timeout=600, fast=True):
    "`python -m fastai_seq *args` in `cwd`, as a user types it (paths relative to `cwd`); its stdout"
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    if fast: env['FASTAI_SEQ_FAST'] = '1'
    r = subprocess.run([sys.executable, '-m', 'fastai_seq', *args], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=timeout)
    assert r.returncode==0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

def _epoch_rows(out:str) -> list:
    "The rows of the epoch table(s) in `out`, as lists of fields, each checked against its header's length"
    lines, rows = out.split('\n'), []
    for i,l in enumerate(lines):
        if l.split()[:2]==['epoch', 'train_loss']:
            n = len(l.split())
            for r in lines[i+1:]:
                if not r.strip() or not r.split()[0].isdigit(): break
                assert len(r.split())==n, (l, r)   # a value in every column: train_loss included
                rows.append(r.split())
    return rows

def test_forecast_command(tmp_path):
    "README's main job with relative paths (--out, --test): trains, prints a readable report, writes every file under cwd/out"
    from fastai_seq.datasets import MovingMNIST
    MovingMNIST(n_in=10, n_out=10, seed=5).to_npy(tmp_path/'test_seq.npy', 8)  # the standard file's layout
    out = _run(['forecast', '--out', 'out', '--test', 'test_seq.npy'], tmp_path)
    # one epoch row with its training loss; each metric says which way is better; the two scales have distinct names
    rows = _epoch_rows(out)
    assert len(rows)==1 and rows[0][0]=='0' and 0 < float(rows[0][1]) < 1
    assert re.search(r'mse_px: 0\.\d+ .*lower is better', out) and re.search(r'ssim: \S+ .*higher is better', out)
    assert 'mse/frame' in out and 'mse: ' not in out and 'SSIM rewards sharp frames' in out
    # the report beside the two baselines, per horizon step, on the validation set and on the test file
    assert out.count('copy last') >= 2 and out.count('blank') >= 2 and 'per horizon step' in out
    assert 'test_seq.npy (8 sequences, never used for training or model selection)' in out
    o = tmp_path/'out'
    assert not (o/'out').exists() and f"Wrote {Path('out')/'model.pkl'}" in out
    assert (o/'model.pkl').exists() and Image.open(o/'predictions.png').size[0] > 200
    for png in ('horizon.png', 'horizon_test.png'): assert Image.open(o/png).size[0] > 200, png
    gif = Image.open(o/'prediction.gif')
    assert gif.n_frames == 20  # 10 input frames, then 10 predicted
    learn = load_learner(o/'model.pkl')
    assert learn.arch == 'convgru'

def _plain_folder(root:Path) -> Path:
    "An ordinary folder of class sub-folders whose file names say nothing (`plain/<class>/clip<i>.mp4`)"
    from fastai_seq.datasets import make_moving_videos
    src = make_moving_videos(root/'src', n_per_class=4, n_frames=8, size=48, classes=('left', 'down'), seed=0)
    dst = root/'plain'
    for c in ('left', 'down'):
        (dst/c).mkdir(parents=True)
        for i,f in enumerate(sorted((src/c).glob('*.mp4'))): shutil.move(f, dst/c/f'clip{i+1}.mp4')
    shutil.rmtree(src)
    return dst

def test_classify_command_plain_folder(tmp_path, monkeypatch):
    "`classify --data FOLDER --out out`, relative: a folder of class sub-folders with plain names splits by file"
    _plain_folder(tmp_path)
    out = _run(['classify', '--data', 'plain', '--out', 'out', '--arch', 'frames_mean', '--size', '32', '--n-frames', '4'], tmp_path)
    assert 'split: by file (names are not UCF101-style); 6 training, 2 validation videos' in out, out
    assert '--bs 8 lowered to 6, the number of training videos' in out
    assert len(_epoch_rows(out))==1 and re.search(r'accuracy: \S+ .*higher is better', out)
    o = tmp_path/'out'
    assert (o/'model.pkl').exists() and Image.open(o/'results.png').size[0] > 100 and not (o/'out').exists()
    monkeypatch.chdir(tmp_path)
    learn = load_learner('out/model.pkl')
    p1, p2 = learn.predict('plain/down/clip1.mp4'), learn.predict(Path('plain/down/clip1.mp4'))
    assert p1[0] in ('left', 'down') and p1[0]==p2[0] and (p1[2]==p2[2]).all()

def test_run_forecast_relative_out(tmp_path, monkeypatch, capsys):
    "`run_forecast` in-process, with the default relative `out` and a time budget: epoch rows with their loss, files in cwd/out"
    from fastai_seq.__main__ import run_forecast, console_logging
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('FASTAI_SEQ_FAST', '1')
    with console_logging(lines=True): res = run_forecast(n_in=4, n_out=4, n_train=16, n_valid=8, bs=8, budget=1)
    out = capsys.readouterr().out
    assert re.search(r'for 1 s \(about [\d.]+ epochs? on this machine', out) and len(_epoch_rows(out)) >= 1, out
    for f in ('model.pkl', 'predictions.png', 'horizon.png', 'prediction.gif'): assert (tmp_path/'out'/f).exists(), f
    assert res['report'].n==8 and 0 < res['mse'] < 1 and not (tmp_path/'out'/'out').exists()

def test_run_classify_relative_out(tmp_path, monkeypatch, capsys):
    "`run_classify` in-process on its generated UCF101-named videos: split by group, model.pkl that predicts from a `str`"
    from fastai_seq.__main__ import run_classify
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('FASTAI_SEQ_FAST', '1')
    run_classify('frames_mean', out='cls', size=32, n_frames=4)
    out = capsys.readouterr().out
    assert 'split: by UCF101 group (no group in both sets); 24 training, 8 validation videos' in out
    assert (tmp_path/'cls'/'model.pkl').exists() and (tmp_path/'cls'/'results.png').exists()
    vid = sorted(Path('cls/motion_videos/up').glob('*.mp4'))[0]
    learn = load_learner('cls/model.pkl')
    p1, p2 = learn.predict(str(vid)), learn.predict(vid)
    assert p1[0] in ('left', 'right', 'up', 'down') and p1[0]==p2[0] and (p1[2]==p2[2]).all()

def test_help_of_each_command(capsys):
    "Each subcommand has its own --help under the program's name, listing its own options only"
    r = subprocess.run([sys.executable, '-m', 'fastai_seq', 'forecast', '--help'], capture_output=True, text=True)
    assert r.returncode==0 and r.stdout.startswith('usage: python -m fastai_seq forecast')
    assert '--budget SECONDS' in r.stdout and '--test FILE' in r.stdout and '--data' not in r.stdout
    from fastai_seq.__main__ import main
    with pytest.raises(SystemExit) as e: main(['classify', '--help'])
    out = capsys.readouterr().out
    assert e.value.code==0 and out.startswith('usage: fastai_seq classify')   # the console script's name
    assert '--n-frames N' in out and '--pretrained' in out and '--budget' not in out and '__main__' not in out
    with pytest.raises(SystemExit) as e: main(['--help'])
    out = capsys.readouterr().out
    assert e.value.code==0 and 'forecast' in out and 'classify' in out and 'relative to the current directory' in out

def test_bad_arguments(capsys):
    from fastai_seq.__main__ import main
    for argv,msg in ((['forecast', '--data', 'x'], '--data is for `classify`; `forecast` takes --digits.'),
                     (['classify', '--budget', '3'], '--budget is for `forecast`.'),
                     (['forecast', '--bogus'], 'unrecognized arguments: --bogus'),
                     (['dance'], "invalid choice: 'dance'")):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code==2 and msg in capsys.readouterr().err, argv

def test_epoch_lines_when_not_a_terminal(capsys):
    "Output to a log or pipe: a header and one line an epoch, no progress-bar redraws; fastai's defaults come back after"
    import torch
    from fastai.learner import Learner, defaults
    from fastai.data.core import DataLoaders
    from fastai.callback.progress import ProgressCallback
    from fastai_seq.callbacks import console_logging, EpochLines
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
                '--epochs', '1', '--out', 'out'], tmp_path)
    assert "Fine-tuning pretrained 'frames_mean' (body=resnet18, pool=concat, lr=0.002)" in out, out
    assert '1 epoch(s) frozen, then 1 unfrozen' in out and '\r' not in out and 'video accuracy' in out
    assert sum(l.split()[:1]==['epoch'] for l in out.split('\n'))==2   # fine_tune: the frozen fit, then the unfrozen one
    assert len(_epoch_rows(out))==2
    learn = load_learner(tmp_path/'out'/'model.pkl')
    assert learn.model.encoder.module.pool.pool=='concat'
    norm = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norm)==1 and torch.allclose(norm[0].std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
