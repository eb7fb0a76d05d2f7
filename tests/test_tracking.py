"Experiment tracking and sharing: a real offline wandb run holds the logged GIFs; the Hub round trip keeps the predictions"
import glob, json, shutil, types, pytest, torch
from pathlib import Path
from PIL import Image
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, FuncSplitter
from fastai_seq.data import VideoBlock
from fastai_seq.video import get_video_files
from fastai_seq.datasets import make_moving_videos, moving_mnist_dls
from fastai_seq.learner import seq_learner
from fastai_seq.tracking import *
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `learn.predict` with paths and `n_out`, `evaluate_clips`, ...)

@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    return make_moving_videos(tmp_path_factory.mktemp('vids'), n_per_class=2, n_frames=6, size=32, classes=('left', 'up'),
                              speed=(0.5, 0.8), seed=0)

def _clf_dls(path):
    return DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=FuncSplitter(lambda o: o.stem.endswith('_1'))).dataloaders(path, bs=2, num_workers=0)

def test_seq_gif_bytes():
    seq = torch.stack([torch.full((1, 8, 10), 40*i, dtype=torch.uint8) for i in range(3)])  # grey frames 0, 40, 80
    im = Image.open(seq_gif_bytes(seq, min_size=30))
    assert im.format == 'GIF' and im.n_frames == 3 and im.size == (30, 24)  # scaled 3x (nearest) to reach min_size
    im.seek(2)
    assert im.convert('L').getpixel((0, 0)) == 80

# ---- Weights & Biases, offline: a real run written to disk ----
@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip('wandb', reason="wandb is optional: pip install 'fastai_seq[wandb]'")
    from fastai.callback.wandb import WandbCallback
    for k in ('DIR', 'CONFIG_DIR', 'CACHE_DIR', 'DATA_DIR', 'ARTIFACT_DIR'):
        (tmp_path/k).mkdir(); monkeypatch.setenv(f'WANDB_{k}', str(tmp_path/k))
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setattr(WandbCallback, '_wandb_watch_called', False)
    try: yield wandb, WandbCallback, tmp_path/'DIR'
    finally:
        if wandb.run is not None: wandb.finish()
        wandb.teardown()  # stops wandb's service process and threads

def _run_files(d):
    [run] = glob.glob(str(d/'wandb'/'offline-run-*'))
    return Path(run)/'files'

def _table(files):
    [fn] = glob.glob(str(files/'media'/'table'/'Prediction_Samples_*.table.json'))
    return json.loads(Path(fn).read_text())

def test_wandb_logs_classification_videos(videos, offline_wandb, capsys):
    wandb, WandbCallback, d = offline_wandb
    dls = _clf_dls(videos)
    wandb.init(project='fastai_seq-test', dir=str(d))
    learn = seq_learner(dls, 'frames_mean')
    with learn.no_bar(): learn.fit(1, cbs=WandbCallback(log_preds=True, n_preds=2))
    wandb.finish()
    assert 'could not' not in capsys.readouterr().out  # fastai's callback swallows errors into prints: none here
    files = _run_files(d)
    gifs = sorted((files/'media'/'videos').glob('Prediction_Videos_*.gif'))
    assert len(gifs) == 2
    for g in gifs:
        im = Image.open(g)
        assert im.format == 'GIF' and im.n_frames == 4 and im.size == (96, 96)  # 4 sampled frames of 32x32, scaled 3x
    t = _table(files)
    assert t['columns'] == ['Input video', 'Ground_Truth', 'Predictions', 'Probability'] and len(t['data']) == 2
    assert all(r[1] in ('left', 'up') and r[2] in ('left', 'up') and 0.5 <= r[3] <= 1 for r in t['data'])
    assert learn.cbs.filter(lambda c: isinstance(c, WandbCallback)) == []  # fit(cbs=...) removed it again

def test_wandb_logs_forecast_videos(offline_wandb, capsys):
    wandb, WandbCallback, d = offline_wandb
    dls = moving_mnist_dls(n_in=3, n_out=2, n_train=8, n_valid=4, bs=4, size=32, seed=1)
    wandb.init(project='fastai_seq-test', dir=str(d))
    learn = seq_learner(dls, 'convgru', szs=(8, 16), stem=(8,), metrics=[])
    with learn.no_bar(): learn.fit(1, cbs=WandbCallback(log_preds=True, n_preds=2))
    wandb.finish()
    assert 'could not' not in capsys.readouterr().out
    files = _run_files(d)
    gifs = sorted((files/'media'/'videos').glob('Prediction_Videos_*.gif'))
    assert len(gifs) == 2
    for g in gifs:  # target | prediction side by side, one GIF frame per predicted step
        im = Image.open(g)
        assert im.n_frames == 2 and im.size == (32+2+32, 32)
    t = _table(files)
    assert t['columns'] == ['Input', 'Ground_Truth', 'Predictions', 'mse'] and len(t['data']) == 2
    assert all(0 <= r[3] <= 1 for r in t['data'])

# ---- Hugging Face Hub round trip, no network ----
def test_hub_round_trip(videos, tmp_path, monkeypatch):
    hf = pytest.importorskip('huggingface_hub', reason="pip install 'fastai_seq[hub]'")
    pytest.importorskip('toml', reason="from_pretrained_fastai reads pyproject.toml with toml: pip install 'fastai_seq[hub]'")
    from huggingface_hub.fastai_utils import _save_pretrained_fastai
    dls = _clf_dls(videos)
    learn = seq_learner(dls, 'frames_mean', path=tmp_path)
    fn = get_video_files(videos)[0]
    label, idx, probs = learn.predict(fn)
    def same(l):
        lbl2, idx2, probs2 = l.predict(fn)
        assert (lbl2, idx2) == (label, idx) and torch.allclose(probs2, probs, atol=1e-6)
    # huggingface_hub's own functions: the folder `push_to_hub_fastai` uploads, read back by `from_pretrained_fastai`
    # (which takes a local folder only as a relative, repo-id-like path)
    monkeypatch.chdir(tmp_path)
    _save_pretrained_fastai(learn, 'hf_repo')
    same(hf.from_pretrained_fastai('hf_repo'))
    learn.path = tmp_path  # huggingface_hub repointed it
    # ours: any path, a config.json describing the learner, `learn.path` left alone
    out = save_pretrained_seq(learn, tmp_path/'local'/'seq_repo')
    assert learn.path == tmp_path and {'model.pkl', 'config.json', 'pyproject.toml', 'README.md'} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['library'] == 'fastai_seq' and (cfg['arch'], cfg['task']) == ('frames_mean', 'classify')
    assert cfg['vocab'] == ['left', 'up'] and cfg['seq_shape']['n_frames'] == 4
    same(from_pretrained_seq(out))
    # push_to_hub_seq with only the network calls replaced: the upload lands in a local "remote" folder
    remote = tmp_path/'remote'
    monkeypatch.setattr(hf.HfApi, 'create_repo', lambda self, repo_id, **kw: types.SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(hf.HfApi, 'upload_folder', lambda self, repo_id, folder_path, **kw:
                        str(shutil.copytree(folder_path, remote/repo_id)))
    push_to_hub_seq(learn, 'someone/seq-model', config={'dataset': 'motion'})
    assert learn.path == tmp_path and json.loads((remote/'someone/seq-model'/'config.json').read_text())['dataset'] == 'motion'
    same(from_pretrained_seq(remote/'someone'/'seq-model'))
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no model\.pkl"): from_pretrained_seq(tmp_path/'empty')
