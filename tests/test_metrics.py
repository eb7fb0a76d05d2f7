"Tests for fastai_seq.metrics: forecasting metrics on [0,1] frames, de-normalisation, batch weighting, capped top-k"
import math, pickle
import numpy as np
import pytest
import torch
from torch import nn
from fastai.vision.all import DataLoaders, Learner, Normalize, MSELossFlat, CrossEntropyLossFlat, TensorImage, accuracy
from fastai.metrics import top_k_accuracy as fastai_top_k
from fastai_seq.core import ImageSeq
from fastai_seq.metrics import *

mse, mae, top_k_accuracy = seq_mse, seq_mae, TopKAccuracy()   # ours, under short local names

def smooth_seq(b=2, t=3, c=1, h=24, w=24, seed=0):
    "Frames with structure (blobs on a gradient) in [0,1], so SSIM has something to measure"
    g = torch.Generator().manual_seed(seed)
    yy,xx = torch.meshgrid(torch.linspace(0,1,h), torch.linspace(0,1,w), indexing='ij')
    out = 0.3*xx + 0.2*yy
    out = out.expand(b,t,c,h,w).clone()
    for _ in range(4):
        cy,cx = torch.rand(2, generator=g)
        r = 0.05 + 0.1*torch.rand(1, generator=g)
        out += 0.5*torch.exp(-((yy-cy)**2 + (xx-cx)**2)/(2*r**2))
    out += 0.05*torch.rand(b,t,c,h,w, generator=g)
    return out.clamp(0,1)

# ---------------------------------------------------------------- reference SSIM: a plain numpy loop
def ref_ssim_image(x, y, win=11, sigma=1.5, L=1.):
    "SSIM of two (C,H,W) float64 arrays: a 2-D Gaussian window slid over every valid position, channels averaged"
    ax = np.arange(win) - (win-1)/2
    k = np.exp(-(ax[:,None]**2 + ax[None,:]**2)/(2*sigma**2)); k /= k.sum()
    c1,c2 = (0.01*L)**2, (0.03*L)**2
    vals = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1]-win+1):
            for j in range(x.shape[2]-win+1):
                a,b = x[ch,i:i+win,j:j+win], y[ch,i:i+win,j:j+win]
                mx,my = (k*a).sum(),(k*b).sum()
                vx,vy,cxy = (k*(a-mx)**2).sum(),(k*(b-my)**2).sum(),(k*(a-mx)*(b-my)).sum()
                vals.append(((2*mx*my+c1)*(2*cxy+c2))/((mx**2+my**2+c1)*(vx+vy+c2)))
    return float(np.mean(vals))

def test_ssim_matches_reference_per_frame():
    t = smooth_seq(b=2, t=2, c=2, h=20, w=18, seed=1)
    p = (t + 0.15*torch.randn(t.shape, generator=torch.Generator().manual_seed(2))).clamp(0,1)
    got = frame_ssim(p.flatten(0,1), t.flatten(0,1))
    ref = [ref_ssim_image(p[i,j].double().numpy(), t[i,j].double().numpy()) for i in range(2) for j in range(2)]
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-3)
    assert min(ref) < 0.95  # the frames really differ
    assert ssim(p, t).item() == pytest.approx(float(np.mean(ref)), abs=1e-3)

def test_ssim_small_frames_use_smaller_window():
    t = torch.rand(1,1,1,8,8)
    p = (t + 0.1).clamp(0,1)
    ref = ref_ssim_image(p[0,0].double().numpy(), t[0,0].double().numpy(), win=7)
    assert ssim(p, t).item() == pytest.approx(ref, abs=1e-3)

def test_ssim_identity_and_monotonic_in_noise():
    t = smooth_seq(b=2, t=3, c=3)
    assert ssim(t, t).item() == pytest.approx(1., abs=1e-5)
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(3))
    vals = [ssim((t + s*noise).clamp(0,1), t).item() for s in (0., 0.02, 0.05, 0.1, 0.2, 0.4)]
    assert vals[0] == pytest.approx(1., abs=1e-5)
    assert all(a > b for a,b in zip(vals, vals[1:])), vals
    assert vals[-1] < 0.5

def test_mse_mae_and_frame_sums():
    t = smooth_seq(b=3, t=4, c=2, h=10, w=12)
    p = torch.rand(t.shape, generator=torch.Generator().manual_seed(4))
    assert mse(p, t).item() == pytest.approx(((p-t)**2).mean().item(), rel=1e-5)
    assert mae(p, t).item() == pytest.approx((p-t).abs().mean().item(), rel=1e-5)
    chw = 2*10*12
    assert mse_frame(p, t).item() == pytest.approx(mse(p, t).item()*chw, rel=1e-5)
    assert mae_frame(p, t).item() == pytest.approx(mae(p, t).item()*chw, rel=1e-5)
    # OpenSTL's definition: mean over (batch, time), then sum over (C,H,W)
    openstl_mse = ((p-t)**2).numpy().mean(axis=(0,1)).sum()
    assert mse_frame(p, t).item() == pytest.approx(float(openstl_mse), rel=1e-5)
    # tuples of frames and single (B,C,H,W) frames are accepted
    assert mse(list(p.unbind(1)), t).item() == pytest.approx(mse(p, t).item(), rel=1e-6)
    assert mse(p[:,0], t[:,0]).item() == pytest.approx(((p[:,0]-t[:,0])**2).mean().item(), rel=1e-5)

def test_psnr_known_values():
    t = torch.full((1,2,1,8,8), 0.5)
    p = t.clone()
    p[:,0] += 0.1   # mse 1e-2 -> 20 dB
    p[:,1] += 0.01  # mse 1e-4 -> 40 dB
    assert psnr(p, t).item() == pytest.approx(30., abs=1e-3)  # per frame, then averaged (not 10*log10(1/mean mse))
    assert psnr(t, t).item() == pytest.approx(100., abs=1e-3)  # a perfect frame is capped, not inf
    assert psnr(torch.zeros(1,1,1,4,4), torch.ones(1,1,1,4,4)).item() == pytest.approx(0., abs=1e-6)
    # predictions are clipped to [0,1] by default for psnr/ssim, not for mse
    over = t + 1.
    assert psnr(over, t).item() == pytest.approx(-10*math.log10(0.25), abs=1e-3)
    assert PSNR(clamp=False)(over, t).item() == pytest.approx(0., abs=1e-3)
    assert mse(over, t).item() == pytest.approx(1., abs=1e-6)

def test_explicit_denormalisation():
    mean,std = [0.485, 0.456, 0.406],[0.229, 0.224, 0.225]
    m,s = torch.tensor(mean).view(3,1,1),torch.tensor(std).view(3,1,1)
    t = smooth_seq(b=2, t=2, c=3, h=16, w=16)
    p = (t + 0.1*torch.randn(t.shape, generator=torch.Generator().manual_seed(5))).clamp(0,1)
    pn,tn = (p-m)/s,(t-m)/s
    for f,F in [(mse,MSE), (mae,MAE), (ssim,SSIM), (psnr,PSNR), (mse_frame,MSEFrame), (mae_frame,MAEFrame)]:
        assert F(mean, std)(pn, tn).item() == pytest.approx(f(p, t).item(), rel=1e-4, abs=1e-5), f.name
        assert F(torch.tensor(mean).view(1,3,1,1), torch.tensor(std).view(1,3,1,1))(pn, tn).item() == pytest.approx(f(p, t).item(), rel=1e-4, abs=1e-5)
    assert mse(pn, tn).item() != pytest.approx(mse(p, t).item(), rel=1e-2)  # a plain call undoes nothing
    with pytest.raises(ValueError, match='channels'): MSE([0.1, 0.2], [1., 1.])(pn, tn)

def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match='differ'): mse(torch.rand(1,2,1,8,8), torch.rand(1,3,1,8,8))
    with pytest.raises(ValueError, match=r'\(B,T,C,H,W\)'): ssim(torch.rand(8,8), torch.rand(8,8))

# ---------------------------------------------------------------- inside a real Learner
class ShiftModel(nn.Module):
    "Predicts the input frames, scaled by `a` (a fixed forecaster with a parameter so `Learner` is happy)"
    def __init__(self, a=1.): super().__init__(); self.a = nn.Parameter(torch.tensor(a))
    def forward(self, x): return x*self.a

def make_items(n, seed, c=3):
    g = torch.Generator().manual_seed(seed)
    xs = smooth_seq(b=n, t=2, c=c, h=16, w=16, seed=seed)
    ys = (xs + 0.1*torch.randn(xs.shape, generator=g)).clamp(0,1)
    ys[::3] = torch.rand(ys[::3].shape, generator=g)  # uneven difficulty, so wrong batch weighting shows
    return [(ImageSeq(x), ImageSeq(y)) for x,y in zip(xs, ys)], xs, ys

ALL = [mse, mae, ssim, psnr, mse_frame, mae_frame]

@pytest.mark.parametrize('normalize', [False, True])
def test_learner_validate_matches_whole_set(normalize):
    valid,xs,ys = make_items(10, seed=6)  # bs=4: batches of 4, 4, 2
    train,_,_ = make_items(4, seed=7)
    after = [Normalize.from_stats([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], cuda=False)] if normalize else []
    dls = DataLoaders.from_dsets(train, valid, bs=4, after_batch=after, device='cpu')
    assert [len(b[0]) for b in dls.valid] == [4, 4, 2]
    # in normalised space the model's output x_n de-normalises to x: metrics must equal those of (x, y) on [0,1]
    learn = Learner(dls, ShiftModel(), loss_func=MSELossFlat(), metrics=ALL)
    with learn.no_bar(): res = learn.validate()
    assert learn.recorder.metric_names[3:-1] == ['mse', 'mae', 'ssim', 'psnr', 'mse_frame', 'mae_frame']
    for m,v in zip(ALL, res[1:]):
        assert v == pytest.approx(m(xs, ys).item(), rel=1e-4), m.name
    # a plain batch mean of batch means would weight the last batch of 2 like the others: it differs here
    bm = np.mean([mse(xs[i:i+4], ys[i:i+4]).item() for i in (0, 4, 8)])
    assert abs(bm - res[1]) > 1e-4

def test_learner_denorm_switch_and_explicit_stats():
    valid,xs,ys = make_items(6, seed=8)
    mean,std = [0.5, 0.4, 0.3],[0.2, 0.25, 0.3]
    norm = Normalize.from_stats(mean, std, cuda=False)
    dls = DataLoaders.from_dsets(valid, valid, bs=4, after_batch=[norm], device='cpu')
    assert [t.flatten().tolist() for t in get_norm_stats(dls)] == [t.flatten().tolist() for t in (norm.mean, norm.std)]
    m,s = torch.tensor(mean).view(3,1,1),torch.tensor(std).view(3,1,1)
    xn,yn = (xs-m)/s,(ys-m)/s
    metrics = [mse, MSE(denorm=False, name='mse_raw'), MSE(*get_norm_stats(dls), name='mse_explicit'),
               MSE(mean=0., std=1., name='mse_identity')]
    learn = Learner(dls, ShiftModel(), loss_func=MSELossFlat(), metrics=metrics)
    with learn.no_bar(): res = learn.validate()
    assert res[1] == pytest.approx(mse(xs, ys).item(), rel=1e-4)
    assert res[2] == pytest.approx(mse(xn, yn).item(), rel=1e-4)
    assert res[3] == pytest.approx(res[1], rel=1e-5)
    assert res[4] == pytest.approx(res[2], rel=1e-5)
    assert get_norm_stats(DataLoaders.from_dsets(valid, valid, bs=4, device='cpu')) == (None, None)

def test_metric_pickles_with_state_reset():
    m = pickle.loads(pickle.dumps(SSIM(mean=[0.5], std=[0.5], name='s2')))
    assert m.name == 's2' and m.clamp and m.value is None
    t = torch.rand(1,1,1,12,12)
    assert m(t, t).item() == pytest.approx(1., abs=1e-5)

# ---------------------------------------------------------------- top-k
def test_top_k_capped_and_named():
    inp = torch.tensor([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.35, 0.25, 0.4], [0.5, 0.2, 0.3]])
    targ = torch.tensor([2, 0, 0, 1])
    assert top_k_accuracy.__name__ == 'top_5_accuracy'
    assert top_k_accuracy(inp, targ).item() == 1.  # k=5 > 3 classes: capped at 3, no error
    with pytest.raises(RuntimeError): fastai_top_k(inp, targ, k=5)  # what the cap avoids
    assert top_k_accuracy(inp, targ, k=2).item() == pytest.approx(fastai_top_k(inp, targ, k=2).item()) == 0.75
    top1 = TopKAccuracy(1)
    assert top1.__name__ == 'top_1_accuracy'
    assert top1(inp, targ).item() == accuracy(inp, targ).item() == 0.25
    assert pickle.loads(pickle.dumps(TopKAccuracy(3))).__name__ == 'top_3_accuracy'

def test_top_k_in_learner():
    g = torch.Generator().manual_seed(9)
    items = [(torch.randn(4, generator=g), torch.tensor(i%3)) for i in range(7)]
    dls = DataLoaders.from_dsets(items, items, bs=3, device='cpu')
    learn = Learner(dls, nn.Linear(4, 3), loss_func=CrossEntropyLossFlat(), metrics=[accuracy, top_k_accuracy, TopKAccuracy(2)])
    with learn.no_bar(): res = learn.validate()
    assert learn.recorder.metric_names[3:-1] == ['accuracy', 'top_5_accuracy', 'top_2_accuracy']
    assert res[2] == 1.
    with torch.no_grad():
        x = torch.stack([o[0] for o in items]); y = torch.stack([o[1] for o in items])
        out = learn.model(x)
    assert res[3] == pytest.approx(fastai_top_k(out, y, k=2).item(), abs=1e-6)

def test_learner_leaves_non_image_targets_alone():
    "`Normalize` only touches `TensorImage`s: with a plain-tensor target, only the input was normalised"
    from fastai.torch_core import TensorBase
    _,xs,ys = make_items(6, seed=10)
    mean,std = [0.5, 0.4, 0.3],[0.2, 0.25, 0.3]
    m,s = torch.tensor(mean).view(3,1,1),torch.tensor(std).view(3,1,1)
    for ycls,expected in [(TensorBase, mse((xs-m)/s, ys)), (ImageSeq, mse(xs, ys))]:
        items = [(ImageSeq(x), ycls(y)) for x,y in zip(xs, ys)]
        dls = DataLoaders.from_dsets(items, items, bs=4, after_batch=[Normalize.from_stats(mean, std, cuda=False)], device='cpu')
        dls.valid._one_pass()  # records the batch types, as `DataBlock.dataloaders` does
        learn = Learner(dls, ShiftModel(), loss_func=MSELossFlat(), metrics=[mse])
        with learn.no_bar(): res = learn.validate()
        assert res[1] == pytest.approx(expected.item(), rel=1e-4), ycls

# ---------------------------------------------------------------- fastai's names keep their meaning
def test_fastai_names_intact_after_import():
    "After `from fastai.vision.all import *; from fastai_seq.all import *`, every fastai name is fastai's object"
    ns = {}
    exec('from fastai.vision.all import *', ns)
    ref = dict(ns)
    for m in ('fastai.tabular.all', 'fastai.callback.all', 'fastai.metrics'):
        d = {}
        exec(f'from {m} import *', d)
        for k,v in d.items(): ref.setdefault(k, v)
    exec('from fastai_seq.all import *', ns)
    changed = sorted(k for k,v in ref.items() if not k.startswith('__') and ns.get(k, v) is not v)
    # `TimeDistributed`: API.md's name; a drop-in for fastai's (same arguments, same results: tests/test_layers.py)
    assert changed==['TimeDistributed'], changed

def test_plain_fastai_regression_with_fastai_metrics():
    "A tabular-style regression `Learner(..., metrics=[mse, mae, rmse])` trains after the import, with fastai's values"
    ns = {}
    exec('from fastai.vision.all import *; from fastai_seq.all import *', ns)
    from fastai.metrics import mse as f_mse, mae as f_mae, rmse
    assert ns['mse'] is f_mse and ns['mae'] is f_mae and ns['top_k_accuracy'] is fastai_top_k
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g); y = x@torch.tensor([[1.], [-2.], [0.5]]) + 0.1*torch.randn(64, 1, generator=g)
    items = list(zip(x, y))
    dls = DataLoaders.from_dsets(items[:48], items[48:], bs=16, device='cpu')
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(3, 1), loss_func=MSELossFlat(), metrics=[ns['mse'], ns['mae'], rmse])
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 0.1)
    assert learn.recorder.metric_names[3:-1] == ['mse', 'mae', '_rmse']
    vals = learn.recorder.values[-1]
    with torch.no_grad(): pv = learn.model(x[48:])
    assert vals[2] == pytest.approx(((pv-y[48:])**2).mean().item(), rel=1e-4)
    assert vals[3] == pytest.approx((pv-y[48:]).abs().mean().item(), rel=1e-4)
    assert learn.recorder.values[-1][0] < learn.recorder.values[0][0]   # the training loss fell
