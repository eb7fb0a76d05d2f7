"Hugging Face video classifiers (`fastai_seq.models.hf`): tiny random checkpoints written with save_pretrained, nothing downloaded"
import os
os.environ['HF_HUB_OFFLINE'] = '1'   # any download attempt fails instead of reaching the network
import json, pickle, subprocess, sys, warnings
import pytest
import torch
from torch import Tensor

tr = pytest.importorskip('transformers', reason="transformers not installed (the [hf] extra): the hf-hub: archs are untested")
from fastai.torch_core import TensorBase
from fastai_seq.models.hf import (HFVideoModel, ClipSpec, hf_video_model, hf_split, hf_clip_spec, hf_config,
                                  hf_processor_config, parse_hf_name, is_hf_arch, fit_hf_clip)
from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES as MAPPED

T, S = 4, 32   # the tiny checkpoints' clip: 4 frames at 32x32 (patches 16, tubelets 2)
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

def _config(kind:str):
    if kind=='videomae': return tr.VideoMAEConfig(image_size=S, patch_size=16, num_frames=T, tubelet_size=2, **TINY)
    if kind=='timesformer': return tr.TimesformerConfig(image_size=S, patch_size=16, num_frames=T, **TINY)
    if kind=='vivit': return tr.VivitConfig(image_size=S, num_frames=T, tubelet_size=[2, 16, 16], **TINY)
    if kind=='vjepa2': return tr.VJEPA2Config(crop_size=S, patch_size=16, frames_per_clip=T, tubelet_size=2, hidden_size=32,
                                              num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2., num_pooler_layers=1,
                                              pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1)
    if kind=='videoprism_vision_model':
        return tr.VideoPrismVisionConfig(image_size=S, num_frames=T, tubelet_size=[1, 16, 16], hidden_size=32, num_attention_heads=2,
                                         intermediate_size=64, num_spatial_layers=1, num_temporal_layers=1, num_auxiliary_layers=1)

# the processor config each checkpoint is saved with, and the (mean, std) on [0,1] pixels it amounts to
PROCS = {'videomae': ({'image_mean':[0.5]*3, 'image_std':[0.5]*3, 'do_rescale':True, 'rescale_factor':1/255, 'do_normalize':True,
                       'crop_size':{'height':S, 'width':S}, 'size':{'shortest_edge':S}}, ((0.5,)*3, (0.5,)*3)),
         'timesformer': ({'image_mean':list(IMAGENET[0]), 'image_std':list(IMAGENET[1]), 'do_rescale':True, 'rescale_factor':1/255},
                         IMAGENET),
         'vivit': ({'image_mean':[0.5]*3, 'image_std':[0.5]*3, 'do_rescale':True, 'rescale_factor':1/127.5, 'offset':True},
                   ((0.5,)*3, (0.5,)*3)),
         'vjepa2': (None, IMAGENET),   # no processor config: the family's default
         'videoprism_vision_model': ({'do_normalize':False, 'do_rescale':True, 'rescale_factor':1/255}, ((0.,)*3, (1.,)*3))}
KINDS = [k for k in PROCS if k in MAPPED]

@pytest.fixture(scope='module')
def ckpts(tmp_path_factory, one_thread):
    "One tiny checkpoint folder per model type this transformers maps, with its processor config"
    root = tmp_path_factory.mktemp('hf')
    verbosity = tr.logging.get_verbosity()
    tr.logging.set_verbosity_error()
    res = {}
    for k in KINDS:
        torch.manual_seed(0)
        cfg = _config(k)
        cfg.id2label = {i:f'k{i}' for i in range(5)}; cfg.label2id = {v:i for i,v in cfg.id2label.items()}
        tr.AutoModelForVideoClassification.from_config(cfg).save_pretrained(root/k)
        proc = PROCS[k][0]
        if proc is not None: (root/k/'video_preprocessor_config.json').write_text(json.dumps(proc))
        res[k] = root/k
    yield res
    tr.logging.set_verbosity(verbosity)

def _name(ckpts, k): return f'hf-hub:{ckpts[k]}'

def _build(ckpts, k, n=3, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return hf_video_model(_name(ckpts, k), n, **kw)

def test_parse_names(tmp_path):
    assert is_hf_arch('hf-hub:MCG-NJU/videomae-base') and not is_hf_arch('frames_mean') and not is_hf_arch(None)
    assert parse_hf_name('hf-hub:MCG-NJU/videomae-base')=='MCG-NJU/videomae-base'
    with pytest.raises(ValueError, match='give a checkpoint'): parse_hf_name('hf-hub:')
    with pytest.raises(ValueError, match='save_pretrained'): parse_hf_name(f'hf-hub:{tmp_path}')   # a folder without config.json
    with pytest.raises(ValueError, match='save_pretrained'): parse_hf_name(f'hf-hub:{tmp_path}/missing')

@pytest.mark.parametrize('kind', KINDS)
def test_build_forward_backward_split(ckpts, kind):
    m = _build(ckpts, kind, vocab=['a', 'b', 'c'])
    assert isinstance(m, HFVideoModel) and m.model.config.id2label=={0:'a', 1:'b', 2:'c'}
    # the body keeps the saved weights (compare a parameter the new head does not touch)
    saved = tr.AutoModelForVideoClassification.from_pretrained(ckpts[kind])
    body_sd, saved_sd = m.body.state_dict(), getattr(saved, saved.base_model_prefix).state_dict()
    assert body_sd.keys()==saved_sd.keys() and all(torch.equal(body_sd[k], saved_sd[k]) for k in body_sd)
    x = TensorBase(torch.rand(2, T, 3, S, S))   # fastai batches are TensorBase subclasses
    out = m(x)
    assert type(out) is Tensor and out.shape==(2, 3)
    out.sum().backward()
    body, head = hf_split(m)
    assert len(body) and len(head) and {id(p) for p in body}.isdisjoint(id(p) for p in head)
    assert {id(p) for p in body+head}=={id(p) for p in m.parameters()}
    assert m.model.classifier in [mod for mod in m.modules()] and all(any(p is q for q in head) for p in m.model.classifier.parameters())
    assert all(p.grad is not None for p in head)
    gray = m(torch.rand(2, T, 1, S, S))   # gray clips are repeated to the model's 3 channels
    assert gray.shape==(2, 3)

@pytest.mark.parametrize('kind', KINDS)
def test_clip_spec(ckpts, kind):
    spec = hf_clip_spec(_name(ckpts, kind))
    assert isinstance(spec, ClipSpec) and spec[:2]==(T, S)
    mean, std = PROCS[kind][1]
    assert spec.mean==pytest.approx(mean) and spec.std==pytest.approx(std)
    n, size, mean2, std2 = spec   # unpacks as the 4-tuple of the API
    m = _build(ckpts, kind)
    assert m.input_stats[0]==pytest.approx(mean) and m.clip==(T, S, spec.mean, spec.std)
    assert hf_config(_name(ckpts, kind)).model_type==kind

def test_processor_saved_by_transformers(ckpts, tmp_path):
    "A processor config written by transformers' own VideoMAE processor is read the same"
    import shutil
    d = tmp_path/'vmae'
    shutil.copytree(ckpts['videomae'], d)
    (d/'video_preprocessor_config.json').unlink()
    try: tr.VideoMAEImageProcessor(image_mean=[0.45]*3, image_std=[0.225]*3, crop_size={'height':S, 'width':S}).save_pretrained(d)
    except Exception as e: pytest.skip(f"VideoMAEImageProcessor unavailable: {e}")
    assert hf_processor_config(f'hf-hub:{d}')['image_mean']==[0.45]*3
    assert hf_clip_spec(f'hf-hub:{d}')==(T, S, (0.45,)*3, (0.225,)*3)

def test_videomae_mismatch_raises(ckpts):
    for n, s in ((16, S), (T, 64)):
        with pytest.raises(ValueError, match=r'VideoMAE takes exactly 4 frames at 32x32.*VideoBlock\(n_frames=4\).*Resize\(32\)'):
            _build(ckpts, 'videomae', n_frames=n, size=s)
    with pytest.raises(ValueError, match='tubelets'): _build(ckpts, 'vivit', n_frames=5, size=S)
    # from the config alone there are no weights to keep: built for the data's clip
    m = hf_video_model(_name(ckpts, 'videomae'), 3, pretrained=False, n_frames=8, size=48)
    assert m(torch.rand(2, 8, 3, 48, 48)).shape==(2, 3) and m.clip[:2]==(8, 48)

@pytest.mark.parametrize('kind', [k for k in KINDS if k!='videomae'])
def test_adapts_with_one_warning(ckpts, kind):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        m = hf_video_model(_name(ckpts, kind), 3, n_frames=8, size=48)
    msgs = [str(o.message) for o in w if 'adapted to' in str(o.message)]
    assert len(msgs)==1 and '8-frame 48x48' in msgs[0] and 'VideoBlock(n_frames=4)' in msgs[0]
    assert m.clip[:2]==(8, 48)
    out = m(torch.rand(2, 8, 3, 48, 48))
    assert out.shape==(2, 3)
    out.sum().backward()
    if kind=='vjepa2': assert all(o.grid_size==3 and o.grid_depth==4 for o in m.modules() if hasattr(o, 'grid_depth'))
    if kind=='timesformer':
        assert m.model.timesformer.embeddings.time_embeddings.shape[1]==8
        assert m.model.timesformer.embeddings.position_embeddings.shape[1]==1+9
    with warnings.catch_warnings(record=True) as w:   # the clip it now has: nothing more to say
        warnings.simplefilter('always')
        assert fit_hf_clip(m, 8, 48) is None and not w

def test_non_square_where_needed(ckpts):
    if 'timesformer' not in KINDS: pytest.skip('no timesformer')
    with pytest.raises(ValueError, match=r'square frames.*Resize\(32\)'): _build(ckpts, 'timesformer', size=(32, 48))

def test_same_size_head_new_classes(ckpts):
    "A checkpoint head of the same size but other classes is re-initialised; the same classes keep it"
    saved = tr.AutoModelForVideoClassification.from_pretrained(ckpts['vivit'])
    same = _build(ckpts, 'vivit', 5, vocab=[f'k{i}' for i in range(5)])
    assert torch.equal(same.model.classifier.weight, saved.classifier.weight)
    other = _build(ckpts, 'vivit', 5, vocab=list('abcde'))
    assert not torch.equal(other.model.classifier.weight, saved.classifier.weight)

def test_gradient_checkpointing_and_pickle(ckpts):
    m = _build(ckpts, 'videomae', gradient_checkpointing=True)
    assert any(getattr(o, 'gradient_checkpointing', False) for o in m.model.modules())
    m.train()
    x = torch.rand(2, T, 3, S, S)
    out = m(x); out.sum().backward()
    m2 = pickle.loads(pickle.dumps(m))   # fastai's export pickles the model
    m.eval(); m2.eval()
    with torch.no_grad(): assert torch.allclose(m(x), m2(x))
    a = _build(ckpts, 'timesformer', n_frames=8, size=S)
    b = pickle.loads(pickle.dumps(a))
    assert b.clip==a.clip and b.model.config.num_frames==8

def test_frozen_body_trains_head(ckpts):
    "The body frozen as fastai's freeze does (requires_grad off): the head still gets gradients, with checkpointing too"
    for gc in (False, True):
        m = _build(ckpts, 'timesformer', gradient_checkpointing=gc)
        body, head = hf_split(m)
        for p in body: p.requires_grad_(False)
        m.train()
        m(torch.rand(2, T, 3, S, S)).sum().backward()
        assert all(p.grad is None for p in body) and all(p.grad is not None for p in head)

def test_unmapped_types(ckpts, tmp_path, monkeypatch):
    tr.ViTConfig(image_size=S, patch_size=16, **TINY).save_pretrained(tmp_path/'vit')
    with pytest.raises(ValueError, match="model type 'vit' is not a video classification model"):
        hf_clip_spec(f'hf-hub:{tmp_path/"vit"}')
    monkeypatch.delitem(MAPPED, 'vivit')   # as an older transformers would be
    with pytest.raises(ImportError, match=r'ViViT.*transformers>=4\.30'): hf_clip_spec(_name(ckpts, 'vivit'))

def test_import_error_without_transformers(ckpts):
    "Without transformers, an hf-hub: name says what to install"
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from fastai_seq.models.hf import hf_video_model, hf_clip_spec\n"
            "for f in (lambda: hf_video_model('hf-hub:a/b', 2), lambda: hf_clip_spec('hf-hub:a/b')):\n"
            "    try: f()\n"
            "    except ImportError as e: print(e)\n")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(p) for p in sys.path if p])}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode==0, r.stderr
    assert r.stdout.count('pip install "fastai_seq[hf]"')==2, r.stdout

# ---- the user's recipe: clip_spec -> DataBlock -> seq_learner -> fine_tune -> export -> load_learner -> predict(str) ----
def test_seq_learner_recipe(ckpts, tmp_path):
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, FuncSplitter, Normalize, load_learner
    from fastai_seq.all import VideoBlock, get_video_files, make_moving_videos, seq_learner, clip_spec, list_archs, arch_info
    name = _name(ckpts, 'videomae')
    n, size, mean, std = clip_spec(name)
    assert (n, size) == (T, S) and tuple(mean) == (0.5,)*3
    vids = make_moving_videos(tmp_path/'v', n_per_class=3, n_frames=6, size=S, classes=('left', 'up'), speed=(0.5, 0.8), seed=0)
    dls = DataBlock(blocks=(VideoBlock(n_frames=n), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                    splitter=FuncSplitter(lambda o: o.stem.endswith('_2'))).dataloaders(vids, bs=2, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = seq_learner(dls, name, path=tmp_path)       # pretrained by default: the checkpoint's body, a new head
    assert learn.arch == name and learn.task == 'classify' and arch_info(name).task == 'classify'
    norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norms) == 1 and torch.allclose(norms[0].mean.flatten().cpu(), torch.tensor([0.5]*3))   # the checkpoint's stats
    assert learn.model.model.config.id2label == {0: 'left', 1: 'up'}                              # the vocab in the config
    body = list(learn.model.body.parameters())
    assert len(learn.opt.param_groups) == 2 and not any(p.requires_grad for p in body if p.ndim > 1)   # frozen body
    saved = tr.AutoModelForVideoClassification.from_pretrained(ckpts['videomae']).state_dict()
    mine = learn.model.model.state_dict()
    assert all(torch.equal(saved[k], mine[k]) for k in saved if not k.startswith(('classifier', 'fc_norm')))
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    ev = learn.evaluate_clips(n_clips=2)                 # the several-clip protocol these models are reported with
    assert ev.clip_probs.shape == (2, len(dls.valid_ds), 2) and 0 <= ev.video_accuracy <= 1
    with pytest.raises(ValueError, match='crop_size=32'): learn.evaluate_clips(n_clips=1, n_crops=3, crop_size=24)
    fn = str(get_video_files(vids)[0])
    pred, idx, probs = learn.predict(fn)
    learn.export('model.pkl')
    l2 = load_learner(tmp_path/'model.pkl')
    p2, i2, pr2 = l2.predict(fn)
    assert (p2, int(i2)) == (pred, int(idx)) and torch.allclose(pr2, probs, atol=1e-5)
    with pytest.raises(ValueError, match='n_frames'):   # a clip VideoMAE cannot take: at seq_learner time, with the fix
        dls8 = DataBlock(blocks=(VideoBlock(n_frames=2), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                         splitter=FuncSplitter(lambda o: o.stem.endswith('_2'))).dataloaders(vids, bs=2, num_workers=0)
        seq_learner(dls8, name)
    assert 'hf-hub:' in str(__import__('fastai_seq.registry', fromlist=['x']).arch_families())
