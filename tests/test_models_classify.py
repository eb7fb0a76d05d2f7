"Tests of the classification archs (fastai_seq/models/classify.py), parametrized over the registry"
import pickle, time
import pytest, torch, torchvision
import torch.nn.functional as F
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
import fastai.callback.schedule, fastai.callback.progress  # noqa: F401 (Learner.fit_one_cycle, Learner.no_bar)
from fastai_seq.registry import list_archs, arch_info, create_seq_model
from fastai_seq.models.classify import *
from fastai_seq.models.classify import _coords, _prev_diff
from fastai_seq.models.kinetics import *
from fastai_seq.models.pretrained import *

ARCHS = list_archs(task='classify')
KINETICS = ['r2plus1d', 'r3d_18', 'mc3_18', 's3d', 'mvit_v2_s', 'swin3d_t']

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: one torch thread for this module

def _build(arch, c=3, size=(32,32), n_frames=4, n_classes=5, **kwargs):
    return arch_info(arch).builder(n_frames=n_frames, n_classes=n_classes, channels=c, size=size, **kwargs)

def motion_clips(n:int, n_frames:int=8, size:int=32, channels:int=3, noise:float=0.15, seed:int=0):
    "`n` clips `(n,T,C,H,W)` of a blurred blob moving right/left/down/up (classes 0-3): no single frame tells them apart"
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g)
    y = torch.arange(n)%4
    sig = size*(0.05+0.05*u(n))                      # blob radius
    travel = size*(0.25+0.25*u(n))                   # distance covered over the clip
    lo = 2*sig + (size-4*sig-travel)*u(n)            # low end of the path along the axis: the path stays inside
    across = 2*sig + (size-4*sig)*u(n)               # position across the axis
    t = torch.linspace(0, 1, n_frames)
    # the same set of positions forwards (right, down) or backwards (left, up): a reversed clip is the opposite class
    along = lo[:,None] + travel[:,None]*torch.where((y%2==0)[:,None], t, 1-t)
    horiz = (y<2)[:,None]
    cx = torch.where(horiz, along, across[:,None].expand(-1, n_frames))
    cy = torch.where(horiz, across[:,None].expand(-1, n_frames), along)
    grid = torch.arange(size).float()+0.5
    d2 = (grid-cx[...,None,None])**2 + (grid[:,None]-cy[...,None,None])**2
    blob = torch.exp(-d2/(2*sig[:,None,None,None]**2))
    colour = 0.5+0.5*u(n, channels)
    x = 0.2 + 0.7*blob[:,:,None]*colour[:,None,:,None,None] + noise*torch.randn(n, n_frames, channels, size, size, generator=g)
    return x.clamp(0, 1), y

def test_motion_clips_are_direction_only():
    x,y = motion_clips(8, size=32, noise=0.)
    assert x.shape==(8,8,3,32,32) and y.tolist()==[0,1,2,3]*2
    # the blob's centre of mass moves along x for right/left, along y for down/up, in the class's direction
    w = (x.mean(2)-0.2).clamp(min=0)**2
    pos = torch.arange(32).float()
    cx = (w.sum(2)*pos).sum(-1)/w.sum((2,3)); cy = (w.sum(3)*pos).sum(-1)/w.sum((2,3))
    dx,dy = cx[:,-1]-cx[:,0], cy[:,-1]-cy[:,0]
    for i,c in enumerate(y.tolist()):
        d,other = (dx[i],dy[i]) if c<2 else (dy[i],dx[i])
        assert (d>0 if c%2==0 else d<0) and abs(d)>4*abs(other), (c, dx[i], dy[i])

def test_registry_entries():
    assert set(ARCHS) >= {'frames_mean', 'frames_lstm', 'timesformer', 'r2plus1d'}
    for a in ARCHS:
        info = arch_info(a)
        assert info.task=='classify' and info.defaults['lr']>0 and len(info.stats)==2
        assert pickle.loads(pickle.dumps(info.splitter)) is info.splitter  # module level: survives learn.export

@pytest.mark.parametrize('arch,c', [(a,c) for a in ARCHS for c in (1,3) if not (a in KINETICS and c==3)])  # (3: batch_of_one)
def test_forward_backward(arch, c):
    torch.manual_seed(0)
    m = _build(arch, c)
    out = m(torch.rand(2, 4, c, 32, 32))
    assert out.shape==(2,5) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0,4])).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum()>0 for g in grads) >= 0.9*len(grads)

@pytest.mark.parametrize('arch', ARCHS)
def test_batch_of_one(arch):
    torch.manual_seed(0)
    m, x = _build(arch), torch.rand(2, 4, 3, 32, 32)
    out = m(x[:1]); assert out.shape==(1,5)  # training mode
    F.cross_entropy(out, torch.tensor([1])).backward()
    m.eval()
    with torch.no_grad(): assert torch.allclose(m(x[1:]), m(x)[1:], atol=1e-5)  # a batch of one gives that clip's row

@pytest.mark.parametrize('arch', ARCHS)
def test_pickle_round_trip(arch):
    torch.manual_seed(0)
    m, x = _build(arch).eval(), torch.rand(2, 4, 3, 32, 32)
    m2 = pickle.loads(pickle.dumps(m))
    with torch.no_grad(): assert torch.equal(m(x), m2(x))

@pytest.mark.parametrize('arch', ARCHS)
def test_splitter_covers_params(arch):
    m = _build(arch)
    groups = arch_info(arch).splitter(m)
    assert len(groups)>=2 and all(len(g)>0 for g in groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids)==len(set(ids)) and set(ids)=={id(p) for p in m.parameters()}

def _tensor_dls(n=8, size=32, n_frames=4, bs=4):
    x,y = motion_clips(n, n_frames, size)
    dls = DataLoaders.from_dsets(list(zip(x,y)), list(zip(x,y)), bs=bs)
    dls.c = 4
    return dls

def test_freeze_trains_only_the_head():
    dls = _tensor_dls()
    info = arch_info('frames_lstm')
    learn = Learner(dls, create_seq_model('frames_lstm', dls), loss_func=CrossEntropyLossFlat(), splitter=info.splitter)
    learn.freeze()
    m = learn.model
    conv = m.encoder.module.body[0][0].weight
    assert not conv.requires_grad and m.lstm.weight_ih_l0.requires_grad and m.head[-1].weight.requires_grad
    before = conv.detach().clone()
    learn.fit(1, 1e-2)
    assert torch.equal(before, conv)
    learn.unfreeze(); assert conv.requires_grad

def test_create_seq_model_reads_shapes():
    dls = _tensor_dls(n_frames=6)
    m = create_seq_model('timesformer', dls)
    assert m.model.to_out[-1].out_features==4
    assert m(dls.one_batch()[0]).shape==(4,4)

def test_frames_mean_is_order_blind_and_lstm_is_not():
    torch.manual_seed(0)
    x = torch.rand(2, 6, 3, 32, 32); rev = x.flip(1)
    mean,lstm = _build('frames_mean', n_frames=6).eval(),_build('frames_lstm', n_frames=6).eval()
    with torch.no_grad():
        assert torch.allclose(mean(x), mean(rev), atol=1e-5)
        assert not torch.allclose(lstm(x), lstm(rev), atol=1e-3)

def test_spatial_soft_argmax_finds_the_peak():
    x = torch.zeros(2, 1, 5, 9)
    x[0,0,1,6] = x[1,0,4,0] = 50.
    xy = SpatialSoftArgmax()(x)
    assert torch.allclose(xy, torch.tensor([[0.5,-0.5], [-1.,1.]]), atol=1e-4)

@pytest.mark.parametrize('pool,n', [('avg',64), ('concat',128), ('keypoints',16), ('both',144), ('grid',64*16)])
def test_frame_pool_sizes(pool, n):
    fp = FramePool(64, pool, n_kp=8, grid=4)
    assert fp.n_out==n and fp(torch.randn(3,64,8,8)).shape==(3,n)
    with pytest.raises(ValueError, match="pool must be one of"): FramePool(64, 'max')

def test_prev_diff_and_coords():
    x = torch.arange(3.)[None,:,None,None,None].expand(1,3,2,1,1)
    d = _prev_diff(x)
    assert d.shape==(1,3,4,1,1) and d[0,:,2:,0,0].tolist()==[[0,0],[1,1],[1,1]]
    c = _coords(torch.zeros(2,3,5,2,4))
    assert c.shape==(2,3,3,2,4)
    assert c[0,0,0,0].tolist()==pytest.approx([-1,-1/3,1/3,1]) and c[0,0,1,:,0].tolist()==[-1,1]
    assert c[0,:,2,0,0].tolist()==[-1,0,1]

@pytest.mark.parametrize('body', ['resnet18', 'small', 'module', 'builder'])
def test_frames_bodies(body):
    import torchvision
    b = dict(module=nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
             builder=torchvision.models.resnet18).get(body, body)
    m = _build('frames_lstm', c=3, body=b)
    out = m(torch.rand(2, 4, 3, 32, 32))
    assert out.shape==(2,5) and torch.isfinite(out).all()
    assert len(frames_split(m)[0])>0

def test_bad_body_and_small_frames():
    with pytest.raises(ValueError, match="Unknown body 'resnet_nope'"): _build('frames_mean', body='resnet_nope')
    with pytest.raises(ValueError, match="too small.*Resize"): _build('frames_mean', size=(4,4))

def test_timesformer_patch_size_errors():
    with pytest.raises(ValueError, match=r"30x32 are not divisible by patch_size=8.*Resize.*Resize\(32\)"):
        _build('timesformer', size=(30,32))
    with pytest.raises(ValueError, match="patch_size=6 must be a multiple of the stem's downsampling"):
        _build('timesformer', size=(36,36), patch_size=6)
    m = _build('timesformer', size=(32,32))
    with pytest.raises(ValueError, match=r"36x36 are not divisible by patch_size=8.*Resize"): m(torch.rand(1,4,3,36,36))

def test_timesformer_non_square_and_pixel_patches():
    m = _build('timesformer', size=(32,48))
    assert m(torch.rand(2,4,3,32,48)).shape==(2,5)  # frames need not be square
    m = _build('timesformer', size=(32,32), stem=None, diff=False, coords=False, patch_size=16)
    assert m.stem is None and m.model.patch_size==16 and m(torch.rand(2,4,3,32,32)).shape==(2,5)

def _torch_home(monkeypatch, tmp_path):
    "An empty temporary TORCH_HOME (monkeypatch restores the variable); its hub checkpoints folder"
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    return tmp_path/'hub'/'checkpoints'

def _fake_network(monkeypatch, sds:dict):
    "Replace only torch.hub's network call: it 'downloads' `sds[file name]` (a state dict) or fails as offline; the calls"
    from urllib.error import URLError
    calls = []
    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst))
        name = url.rsplit('/', 1)[-1]
        if name not in sds: raise URLError('[Errno -3] Temporary failure in name resolution')
        torch.save(sds[name], dst)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    return calls

def test_pretrained_offline_is_a_clear_error(monkeypatch, tmp_path):
    ckpt = _torch_home(monkeypatch, tmp_path)
    calls = _fake_network(monkeypatch, {})
    for arch in ('frames_mean', 'frames_lstm'):
        with pytest.raises(FileNotFoundError, match=r"could not download .*resnet18-f37072fd\.pth.*Offline, place the file at "
                                                    r".*hub/checkpoints/resnet18-f37072fd\.pth.*pretrained=False"):
            _build(arch, body='resnet18', pretrained=True)
    assert calls[0]==('https://download.pytorch.org/models/resnet18-f37072fd.pth', str(ckpt/'resnet18-f37072fd.pth'))
    with pytest.raises(FileNotFoundError, match=r"r2plus1d_18-91a641e6\.pth"): _build('r2plus1d', pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"Offline, place the file at .*mc3_18-a90a0ba3\.pth"): _build('mc3_18', pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights for body='small'"): _build('frames_lstm', pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights for 'timesformer'"): _build('timesformer', pretrained=True)
    with pytest.raises(FileNotFoundError, match="never|not there"):
        local_weights(torchvision.models.ResNet18_Weights.DEFAULT, download=False)

def test_pretrained_downloads_once_then_uses_the_cache(monkeypatch, tmp_path):
    "The first build downloads through torch.hub into TORCH_HOME (as vision_learner does); later builds read the cache"
    ckpt = _torch_home(monkeypatch, tmp_path)
    torch.manual_seed(1)
    sd = torchvision.models.resnet18().state_dict()
    calls = _fake_network(monkeypatch, {'resnet18-f37072fd.pth': sd})
    m = _build('frames_mean', body='resnet18', pretrained=True)
    assert len(calls)==1 and (ckpt/'resnet18-f37072fd.pth').exists()
    assert torch.equal(m.encoder.module.body[0].weight, sd['conv1.weight'])
    assert torch.equal(m.encoder.module.body[4][0].conv1.weight, sd['layer1.0.conv1.weight'])
    assert m.encoder.module.body.input_stats==((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # frames_lstm's body also sees frame differences: the 3 image channels keep the weights, the others start at 0
    w = _build('frames_lstm', body='resnet18', pretrained=True).encoder.module.body[0].weight
    assert w.shape[1]==6 and torch.equal(w[:,:3], sd['conv1.weight']) and (w[:,3:]==0).all()
    w1 = _build('frames_mean', c=1, body='resnet18', pretrained=True).encoder.module.body[0].weight
    assert torch.allclose(w1[:,0], sd['conv1.weight'].sum(1))
    assert len(calls)==1, "the cached file must be used, not downloaded again"

def test_kinetics_pretrained_from_the_cache(monkeypatch, tmp_path):
    ckpt = _torch_home(monkeypatch, tmp_path); ckpt.mkdir(parents=True)
    calls = _fake_network(monkeypatch, {})
    torch.manual_seed(2)
    sd = torchvision.models.video.mc3_18().state_dict()
    torch.save(sd, ckpt/'mc3_18-a90a0ba3.pth')
    m = _build('mc3_18', c=1, pretrained=True)
    assert calls==[]
    assert torch.equal(m.model.layer1[0].conv1[0].weight, sd['layer1.0.conv1.0.weight'])
    assert torch.allclose(m.model.stem[0].weight[:,0], sd['stem.0.weight'].sum(1))   # grey clips: the RGB kernels summed
    assert m.model.fc.out_features==5 and kinetics_split(m)[1]==list(m.model.fc.parameters())

def _fake_hf_cache(monkeypatch, tmp_path, repo:str, sd:dict=None):
    "A temporary Hugging Face cache holding `sd` as `repo`'s model.safetensors; the hub's metadata call fails as offline"
    import huggingface_hub.constants as C, huggingface_hub.file_download as fd
    from huggingface_hub.errors import OfflineModeIsEnabled
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path/'hf'))
    def offline(*args, **kwargs): raise OfflineModeIsEnabled('no network in the tests')
    monkeypatch.setattr(fd, 'get_hf_file_metadata', offline)
    if sd is None: return
    from safetensors.torch import save_file
    d = tmp_path/'hf'/f"models--{repo.replace('/', '--')}"
    (d/'refs').mkdir(parents=True); (d/'refs'/'main').write_text('a'*40)
    (d/'snapshots'/('a'*40)).mkdir(parents=True)
    save_file({k:v.contiguous() for k,v in sd.items()}, d/'snapshots'/('a'*40)/'model.safetensors')

def test_timm_bodies():
    timm = pytest.importorskip('timm', reason="timm bodies need the 'timm' extra")
    for body,cls in [('convnext_tiny', 'ConvNeXt'), ('efficientnet_b0', 'EfficientNet'), ('timm/resnet50', 'ResNet')]:
        m = _build('frames_mean', body=body, size=(32,32))
        b = m.encoder.module.body
        assert type(b.model).__name__==cls and not hasattr(b, 'input_stats')
        assert m(torch.rand(1, 4, 3, 32, 32)).shape==(1,5) and len(frames_split(m)[0])==len(list(b.parameters()))
    assert type(_build('frames_mean', body='resnet18').encoder.module.body[0]).__name__=='Conv2d'  # torchvision's resnets stay

def test_timm_pretrained_from_the_hf_cache(monkeypatch, tmp_path):
    timm = pytest.importorskip('timm', reason="timm bodies need the 'timm' extra")
    torch.manual_seed(3)
    ref = timm.create_model('efficientnet_b0', num_classes=0)
    _fake_hf_cache(monkeypatch, tmp_path, 'timm/efficientnet_b0.ra_in1k', ref.state_dict())
    m = _build('frames_lstm', body='efficientnet_b0', pretrained=True, frame_diff=False)
    b = m.encoder.module.body
    assert torch.equal(b.model.conv_stem.weight, ref.conv_stem.weight) and torch.equal(b.model.bn2.weight, ref.bn2.weight)
    assert b.input_stats==(tuple(ref.pretrained_cfg['mean']), tuple(ref.pretrained_cfg['std']))
    with pytest.raises(FileNotFoundError, match=r"timm weights of 'convnext_tiny'.*Hugging Face cache.*pretrained=False"):
        _build('frames_mean', body='convnext_tiny', pretrained=True)

def _train(arch, xt, yt, xv, yv, epochs, bs=16, seed=0):
    set_seed(seed)
    dls = DataLoaders.from_dsets(list(zip(xt,yt)), list(zip(xv,yv)), bs=bs)
    dls.c = 4
    info = arch_info(arch)
    learn = Learner(dls, create_seq_model(arch, dls), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    splitter=info.splitter)
    t = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, info.defaults['lr'])
    return learn.recorder.values[-1][2], time.time()-t

@pytest.mark.slow
def test_motion_direction_needs_order():
    "Direction of motion (issue 4): frames_lstm and timesformer learn it from 256 clips; the bag of frames cannot"
    xt,yt = motion_clips(256, seed=1)
    xv,yv = motion_clips(128, seed=1000)
    res = {a:_train(a, xt, yt, xv, yv, ep) for a,ep in [('frames_lstm',8), ('timesformer',12), ('frames_mean',8)]}
    print({a:(round(acc,3), f'{t:.0f}s') for a,(acc,t) in res.items()})
    assert res['frames_lstm'][0]>=0.9 and res['timesformer'][0]>=0.9
    assert res['frames_mean'][0]<=0.6

def test_seq_learner_pretrained_recipe(monkeypatch, tmp_path):
    "pretrained=True fills in the arch's recipe (pooling, lr), adds the weights' Normalize, freezes the body; the caller's args win"
    from fastai.data.transforms import Normalize
    from fastai_seq.learner import seq_learner, pretrained_defaults
    assert pretrained_defaults('frames_lstm')==FRAMES_PRETRAINED and FRAMES_PRETRAINED['body']=='resnet34'
    assert pretrained_defaults('s3d')['frame_size']==224 and pretrained_defaults('r3d_18')['clip_frames']==16
    _torch_home(monkeypatch, tmp_path)
    sd = torchvision.models.resnet18().state_dict()
    _fake_network(monkeypatch, {'resnet18-f37072fd.pth': sd})
    dls = _tensor_dls()
    learn = seq_learner(dls, 'frames_lstm', pretrained=True, body='resnet18')
    m = learn.model
    assert m.encoder.module.pool.pool=='concat' and learn.lr==FRAMES_PRETRAINED['lr']
    norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norms)==1 and torch.allclose(norms[0].mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert not m.encoder.module.body[0].weight.requires_grad and m.head[-1].weight.requires_grad
    learn2 = seq_learner(_tensor_dls(), 'frames_lstm', pretrained=True, body='resnet18', pool='avg', lr=1e-4)
    assert learn2.model.encoder.module.pool.pool=='avg' and learn2.lr==1e-4
    assert not any(isinstance(t, Normalize) for t in seq_learner(_tensor_dls(), 'frames_lstm').dls.after_batch.fs)

def test_kinetics_clip_shape_errors():
    m = _build('mc3_18', c=3)
    with pytest.raises(ValueError, match=r"mc3_18: frames of 8x12 are smaller than its total downsampling \(16\).*Resize"):
        m(torch.rand(1, 4, 3, 8, 12))
    with pytest.raises(ValueError, match=r"mc3_18: expected clips of shape \(B,T,C,H,W\) with C=3, got \(1, 4, 1, 32, 32\)"):
        m(torch.rand(1, 4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(4, 3, 32, 32\)"): m(torch.rand(4, 3, 32, 32))
    with torch.no_grad(): assert m.eval()(torch.rand(1, 3, 3, 20, 36)).shape==(1,5)   # any length and size above the minimum

def test_timm_body_freezes_for_fine_tune():
    "A timm body is the first param group: frozen, its convolutions keep their weights while the rest trains"
    pytest.importorskip('timm', reason="timm bodies need the 'timm' extra")
    from fastai_seq.learner import seq_learner
    set_seed(0)
    learn = seq_learner(_tensor_dls(), 'frames_mean', body='efficientnet_b0')
    stem, head = learn.model.encoder.module.body.model.conv_stem.weight, learn.model.head[-1].weight
    before, hbefore = stem.detach().clone(), head.detach().clone()
    learn.freeze()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert torch.equal(stem, before) and not torch.equal(head, hbefore)
    learn.unfreeze(); assert stem.requires_grad

@pytest.mark.parametrize('c', [1, 2, 6])
def test_first_conv_for_reuses_pretrained_kernels(c):
    "A Conv2d as fastai's `create_body` adapts it (sum, first two x1.5, RGB then zeros), a Conv3d as the video models"
    torch.manual_seed(0)
    m2 = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
    w2 = m2[0].weight.detach().clone()
    assert first_conv_for(m2, c, pretrained=True) is m2 and m2[0].in_channels==c
    want = {1: w2.sum(1, keepdim=True), 2: w2[:,:2]*1.5}.get(c)
    if want is None: assert torch.equal(m2[0].weight[:,:3], w2) and (m2[0].weight[:,3:]==0).all()
    else: assert torch.allclose(m2[0].weight, want)
    m3 = nn.Sequential(nn.Conv3d(3, 4, 3))
    w3,b3 = m3[0].weight.detach().clone(),m3[0].bias.detach().clone()
    first_conv_for(m3, c, pretrained=True)
    want = w3.sum(1, keepdim=True) if c==1 else w3.mean(1, keepdim=True).repeat(1,c,1,1,1)*3/c
    assert torch.allclose(m3[0].weight, want) and torch.equal(m3[0].bias, b3)
    assert first_conv_for(nn.Sequential(nn.Conv2d(3, 4, 3)), 3)[0].in_channels==3
    with pytest.raises(ValueError, match="no Conv2d/Conv3d"): first_conv_for(nn.Linear(3, 4), 1)

def test_r2plus1d_is_a_kinetics_arch_and_old_names_resolve():
    "r2plus1d is built from KINETICS_ARCHS; its old names in classify.py (and learners exported then) still resolve"
    import fastai_seq.models.classify as C, fastai_seq.models.kinetics as K, fastai_seq.models.pretrained as P
    m = _build('r2plus1d', c=1)
    assert isinstance(m, KineticsVideo) and type(m.model).__name__=='VideoResNet' and arch_info('r2plus1d').splitter is kinetics_split
    assert C.local_weights is P.local_weights and C.r2plus1d is K.r2plus1d and C.r2plus1d_split is kinetics_split
    old = C.R2Plus1D(torchvision.models.video.r2plus1d_18(num_classes=5))
    assert kinetics_split(old)[1]==list(old.model.fc.parameters()) and old.eval()(torch.rand(1, 2, 3, 16, 16)).shape==(1,5)
    for name,obj in [('r2plus1d_split', kinetics_split), ('R2Plus1D', K.R2Plus1D)]:   # as an old export's pickle names them
        assert pickle.loads(f'cfastai_seq.models.classify\n{name}\n.'.encode()) is obj
    with pytest.raises(AttributeError): C.nope

def test_builders_are_reached_by_name_not_exported():
    "No builder in a models module's `__all__`; `fastai_seq.all` exports no model name"
    import importlib, fastai_seq.all as A
    from fastai_seq.registry import list_archs
    for mod in ('convrnn', 'unet', 'phydnet', 'simvp', 'seq2seq', 'classify', 'kinetics', 'pretrained', 'blocks'):
        m = importlib.import_module(f'fastai_seq.models.{mod}')
        assert not set(m.__all__) & set(list_archs()), mod
        for n in m.__all__: assert hasattr(m, n), (mod, n)
    assert importlib.import_module('fastai_seq.models').__all__==[]
    assert not any(hasattr(A, n) for n in ['ConvGRUNet', 'r3d_18', 'unet', 'blocks', 'local_weights', 'KineticsVideo'])
