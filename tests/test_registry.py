import warnings
import torch, pytest
from torch import nn
from fastai.vision.all import DataLoaders, TfmdDL, Datasets, CategoryBlock, Categorize, TensorCategory
from fastai_seq.core import ImageSeq
from fastai_seq.registry import *
from fastai_seq.registry import _archs
from fastai_seq.learner import infer_task, model_kwargs_from_dls, create_seq_model

def _seq_dls(task, n=8, t_in=4, t_out=3, c=1, hw=(16, 24)):
    "Tiny DataLoaders of ImageSeq inputs and ImageSeq (forecast) or category (classify) targets"
    xs = [ImageSeq(torch.rand(t_in, c, *hw)) for _ in range(n)]
    if task=='forecast': items = [(x, ImageSeq(torch.rand(t_out, c, *hw))) for x in xs]
    else: items = [(x, TensorCategory(i%3)) for i,x in enumerate(xs)]
    dls = DataLoaders.from_dsets(items, items, bs=4)
    if task=='classify': dls.c = 3
    return dls

@pytest.fixture
def clean_registry():
    list_archs()  # import the bundled models first, so that the snapshot restored afterwards holds them
    saved = dict(_archs)
    yield
    _archs.clear(); _archs.update(saved)

def test_register_list_and_overwrite(clean_registry):
    @register_arch('tiny_fc', task='forecast', lr=1e-2)
    def tiny_fc(n_in, n_out, channels, size, **kwargs):
        "A tiny test model"
        return nn.Identity()
    assert 'tiny_fc' in list_archs() and 'tiny_fc' in list_archs('tiny*') and list_archs('tiny*', task='classify')==[]
    info = arch_info('tiny_fc')
    assert info.task=='forecast' and info.defaults=={'lr': 1e-2} and info.doc=='A tiny test model'
    with pytest.warns(UserWarning, match='overwriting'):
        register_arch('tiny_fc', task='forecast')(tiny_fc)
    with pytest.raises(ValueError, match='task'): register_arch('x', task='segment')

def test_bundled_archs_registered():
    assert set(list_archs(task='forecast')) >= {'unet', 'convgru', 'convlstm', 'phydnet', 'simvp'}
    assert set(list_archs(task='classify')) >= {'frames_mean', 'frames_lstm', 'timesformer', 'r2plus1d', 'r3d_18', 'mc3_18',
                                                's3d', 'mvit_v2_s', 'swin3d_t'}
    assert list_archs('*3d*') == ['r3d_18', 's3d', 'swin3d_t']

def test_kinetics_entries_from_torchvision_metadata():
    "Input size, clip length and stats of torchvision's Kinetics models come from their weights' metadata"
    import torchvision
    for arch,wname in [('r3d_18','R3D_18_Weights'), ('mc3_18','MC3_18_Weights'), ('s3d','S3D_Weights'),
                       ('mvit_v2_s','MViT_V2_S_Weights'), ('swin3d_t','Swin3D_T_Weights')]:
        w = getattr(torchvision.models.video, wname).KINETICS400_V1
        info = arch_info(arch)
        assert info.stats==(tuple(w.transforms().mean), tuple(w.transforms().std))
        assert info.defaults['input_size']==tuple(w.transforms().crop_size) and info.defaults['weights']==str(w)
    assert arch_info('r3d_18').defaults['input_size']==(112,112) and arch_info('mvit_v2_s').defaults['clip_frames']==16
    assert arch_info('mvit_v2_s').stats==((0.45,)*3, (0.225,)*3) and arch_info('s3d').defaults['clip_frames']==14
    assert list_archs('conv*') == ['convgru', 'convlstm']

def test_unknown_arch_lists_known():
    with pytest.raises(ValueError, match=r"Unknown arch 'nope'.*convgru.*frames_lstm"): arch_info('nope')

def test_registry_is_a_decorator_and_a_dict():
    "registry.py holds no data code: importing it loads neither fastai's data modules nor any model"
    import subprocess, sys
    code = ("import sys; import fastai_seq.registry as r; "
            "assert r.__all__==['TASKS', 'ArchInfo', 'register_arch', 'register_arch_family', 'list_archs', 'arch_families', 'arch_info'], r.__all__; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('fastai', 'torch') or m=='fastai_seq.core'], 'imports data code'")
    from conftest import REPO
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode==0, r.stderr[-2000:]

def test_task_inference_and_shape_kwargs():
    f, c = _seq_dls('forecast'), _seq_dls('classify')
    assert infer_task(f)=='forecast' and infer_task(c)=='classify'
    assert model_kwargs_from_dls(f) == dict(channels=1, size=(16, 24), n_in=4, n_out=3)
    assert model_kwargs_from_dls(c) == dict(channels=1, size=(16, 24), n_frames=4, n_classes=3)

def test_wrong_task_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'convgru' is for the 'forecast' task.*'classify'.*frames_lstm"):
        create_seq_model('convgru', _seq_dls('classify'))
    with pytest.raises(ValueError, match=r"'frames_lstm' is for the 'classify'.*convgru"):
        create_seq_model('frames_lstm', _seq_dls('forecast'))

def test_create_with_callable_and_kwargs(clean_registry):
    got = {}
    def builder(**kw): got.update(kw); return nn.Identity()
    create_seq_model(builder, _seq_dls('forecast'), hidden=7)
    assert got == dict(channels=1, size=(16, 24), n_in=4, n_out=3, hidden=7)
