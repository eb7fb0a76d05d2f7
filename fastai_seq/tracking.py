"Experiment tracking and sharing: `WandbCallback(log_preds=True)` logs sequences as GIFs; the Hugging Face Hub round trip of a sequence learner"
import io, json
from pathlib import Path
import numpy as np, torch
from fastai.imports import dispatch
from fastai.torch_core import TensorCategory, TensorMultiCategory
from fastai.learner import Learner, load_learner
from .core import ImageSeq, to_uint8_hwc, save_gif

__all__ = ['wandb_process', 'seq_gif_bytes', 'seq_hub_config', 'save_pretrained_seq', 'push_to_hub_seq', 'from_pretrained_seq']

# ---------------------------------------------------------------------------------------------------------------------
# Weights & Biases: fastai's `WandbCallback(log_preds=True)` calls `wandb_process(x, y, samples, outs, preds)`

def _wandb():
    try: import wandb
    except ImportError: raise ImportError("Logging to Weights & Biases needs wandb: pip install 'fastai_seq[wandb]'") from None
    return wandb

def seq_gif_bytes(
    seq, # One sequence `(T,C,H,W)`: float in [0,1] or ints in [0,255] (a decoded `ImageSeq`)
    fps:float=4, # Frames per second of the GIF
    min_size:int=96, # Frames smaller than this are scaled up (nearest neighbour) by a whole factor to reach about it
) -> io.BytesIO:
    "An animated GIF of `seq` in memory, ready for `wandb.Video(buf, format='gif')`"
    buf = save_gif(seq, io.BytesIO(), fps=fps, min_size=min_size)
    buf.seek(0)
    return buf

def _video(seq, caption):
    return _wandb().Video(seq_gif_bytes(seq), caption=caption, format='gif')

# fastai#4173 (every `fit` with `WandbCallback` raised on plain config values) is fixed in `fastai_patches.py`

def _unlist(o): return o[0] if isinstance(o, (list, tuple)) and len(o)==1 else o

# plum ranks `Any` level with any type and breaks such ties by the later method: the generic one comes first
@dispatch
def wandb_process(x:ImageSeq, y, samples, outs, preds):
    "Other targets: each input sequence as a GIF beside its target and prediction as text"
    wandb = _wandb()
    table = wandb.Table(columns=['Input video', 'Ground_Truth', 'Predictions'])
    for (seq, *ys), out in zip(samples, outs):
        table.add_data(_video(seq, 'Input'), str(_unlist(ys)), str(_unlist(out)))
    return {'Prediction_Samples': table}

@dispatch
def wandb_process(x:ImageSeq, y:TensorCategory|TensorMultiCategory, samples, outs, preds):
    "Classification: a table of each sample as a GIF (captioned 'actual / predicted'), its label, the prediction and its probability"
    wandb, videos = _wandb(), []  # the table's media go into the run's table artifact; the list, into the run's media/videos
    table = wandb.Table(columns=['Input video', 'Ground_Truth', 'Predictions', 'Probability'])
    for i, ((seq, label), out) in enumerate(zip(samples, outs)):
        pred = _unlist(out)
        prob = float(torch.as_tensor(preds[i]).max()) if preds is not None and i < len(preds) else None
        table.add_data(_video(seq, f'{label} / {pred}'), str(label), str(pred), prob)
        videos.append(_video(seq, f'{label} / {pred}'))
    return {'Prediction_Samples': table, 'Prediction_Videos': videos}

@dispatch
def wandb_process(x:ImageSeq, y:ImageSeq, samples, outs, preds):
    "Forecasting: a table of each sample's input, target and predicted frames as GIFs, with the prediction's MSE ([0,1] scale)"
    wandb, videos = _wandb(), []
    table = wandb.Table(columns=['Input', 'Ground_Truth', 'Predictions', 'mse'])
    for (inp, targ), out in zip(samples, outs):
        pred = _unlist(out)
        t, p = (np.stack([to_uint8_hwc(f) for f in o]) for o in (targ, pred))
        mse = float(((t/255-p/255)**2).mean()) if t.shape==p.shape else None
        table.add_data(_video(inp, 'Input'), _video(targ, 'Ground_Truth'), _video(pred, 'Prediction'), mse)
        if t.shape==p.shape:  # target | prediction, side by side, frame by frame
            gap = np.full((t.shape[1], 2, t.shape[3]), 255, np.uint8)
            videos.append(_video([np.concatenate([a, gap, b], 1) for a,b in zip(t, p)], f'target | prediction (mse {mse:.4f})'))
    return {'Prediction_Samples': table, 'Prediction_Videos': videos}

# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face Hub: huggingface_hub's fastai functions, with the learner's sequence metadata and no side effects

def _hub():
    try: import huggingface_hub, toml  # noqa: F401 (`push_to_hub_fastai` checks pyproject.toml with toml)
    except ImportError: raise ImportError("Sharing on the Hugging Face Hub needs huggingface_hub and toml: "
                                          "pip install 'fastai_seq[hub]'") from None
    return huggingface_hub

def seq_hub_config(
    learn:Learner, # A sequence learner (from `seq_learner`)
) -> dict:
    "What a sequence learner is, for the repo's config.json: arch, task, input shape, classes, library versions"
    from . import __version__
    import fastai
    vocab = getattr(learn.dls, 'vocab', None)
    cfg = dict(library='fastai_seq', fastai_seq_version=__version__, fastai_version=fastai.__version__,
               arch=learn.arch if isinstance(getattr(learn, 'arch', None), str) else getattr(getattr(learn, 'arch', None), '__name__', None),
               task=getattr(learn, 'task', None), seq_shape=getattr(learn, 'seq_shape', None),
               vocab=[str(v) for v in vocab] if vocab is not None and getattr(learn, 'task', None)=='classify' else None)
    return json.loads(json.dumps(cfg, default=list))  # tuples -> lists: exactly what config.json will hold

_PYPROJECT = """[build-system]
requires = ["setuptools>=40.8.0", "wheel", "python={python}", "fastai={fastai}", "fastcore={fastcore}", "fastai_seq={fastai_seq}"]
build-backend = "setuptools.build_meta:__legacy__"
"""

_CARD = """---
tags:
- fastai
- fastai_seq
library_name: fastai
---

# {arch} ({task})

A `fastai_seq` learner. Load it with

```python
from fastai_seq.all import *
learn = from_pretrained_seq('{repo}')
```
"""

def save_pretrained_seq(
    learn:Learner, # A trained sequence learner
    save_directory, # Folder to write model.pkl, pyproject.toml, README.md and config.json into
    config:dict=None, # Extra config entries (merged over `seq_hub_config(learn)`)
) -> Path:
    "Write what `push_to_hub_seq` uploads into a local folder, as huggingface_hub's fastai functions lay it out; `learn.path` is kept"
    import fastai, fastcore, platform
    from . import __version__
    d = Path(save_directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {**seq_hub_config(learn), **(config or {})}
    (d/'config.json').write_text(json.dumps(cfg))
    if not (d/'README.md').exists(): (d/'README.md').write_text(_CARD.format(arch=cfg.get('arch'), task=cfg.get('task'), repo=d.name))
    (d/'pyproject.toml').write_text(_PYPROJECT.format(python=platform.python_version(), fastai=fastai.__version__,
                                                      fastcore=fastcore.__version__, fastai_seq=__version__))
    learn.export(d.absolute()/'model.pkl')   # an absolute name: `export` writes there whatever `learn.path` is
    return d

def push_to_hub_seq(
    learn:Learner, # A trained sequence learner
    repo_id:str, # 'namespace/repo_name' on the Hub
    config:dict=None, # Extra config entries (merged over `seq_hub_config(learn)`)
    **kwargs # `huggingface_hub.push_to_hub_fastai` arguments (`token`, `private`, `commit_message`, `branch`, ...)
):
    "Upload a sequence learner to the Hub with `push_to_hub_fastai`, its config.json describing the arch, task and classes"
    hf = _hub()
    old = learn.path
    try: return hf.push_to_hub_fastai(learn, repo_id=repo_id, config={**seq_hub_config(learn), **(config or {})}, **kwargs)
    finally: learn.path = old  # huggingface_hub points it at its temporary folder

def _check_versions(d:Path):
    "Warn when the fastai recorded in `d/pyproject.toml` differs from this one in major.minor: unpickling may then fail"
    import fastai, re
    fn = d/'pyproject.toml'
    m = re.search(r'"fastai[=<>~]+([0-9][^"]*)"', fn.read_text()) if fn.is_file() else None
    if m and m.group(1).split('.')[:2]!=fastai.__version__.split('.')[:2]:
        import warnings
        warnings.warn(f"{d}: the learner was saved with fastai {m.group(1)}, this is fastai {fastai.__version__}: "
                      f"if loading fails, install the version it was saved with (pip install fastai=={m.group(1)}).")

def from_pretrained_seq(
    repo_id, # 'namespace/repo_name' on the Hub, or a local folder written by `save_pretrained_seq`
    revision:str=None, # Branch, tag or commit on the Hub
) -> Learner:
    "Load a learner shared with `push_to_hub_seq` (or `push_to_hub_fastai`), from the Hub or a local folder of any path"
    p = Path(repo_id).expanduser()
    if not p.is_dir():  # a repo id: download the repo's files (huggingface_hub's cache)
        p = Path(_hub().snapshot_download(repo_id=str(repo_id), revision=revision, library_name='fastai_seq'))
    if not (p/'model.pkl').is_file():
        raise FileNotFoundError(f"{p}: no model.pkl in this folder. Write it with `save_pretrained_seq(learn, folder)`.")
    _check_versions(p)
    return load_learner(p/'model.pkl')
