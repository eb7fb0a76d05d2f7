"Tests for fastai_seq.layers: TimeDistributed, StackUnstack, UnstackStack, StackLoss"
import pytest
import torch
from torch import nn, Tensor
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from fastai.losses import MSELossFlat, L1LossFlat
from fastai_seq.layers import *

torch.manual_seed(0)

def loop_over_time(module, x, tdim=1, **kwargs):
    "The reference: call `module` on each time step and stack the results (recursing into tuples)"
    outs = [module(x.select(tdim, i), **kwargs) for i in range(x.shape[tdim])]
    if isinstance(outs[0], tuple): return tuple(torch.stack(o, dim=tdim) for o in zip(*outs))
    return torch.stack(outs, dim=tdim)

class Scaled(nn.Module):
    "A per-frame module with keyword arguments"
    def __init__(self): super().__init__(); self.conv = nn.Conv2d(3, 4, 3, padding=1)
    def forward(self, x, scale=1., bias=None):
        out = self.conv(x)*scale
        return out if bias is None else out + bias.view(1, -1, 1, 1)

class TwoOut(nn.Module):
    "A per-frame module returning a tuple: a feature map and a per-image vector"
    def __init__(self): super().__init__(); self.conv = nn.Conv2d(3, 2, 3, padding=1); self.lin = nn.Linear(3, 5)
    def forward(self, x, shift=0.): return self.conv(x) + shift, self.lin(x.mean((2, 3)))

def allclose(a, b, atol=1e-5):
    if isinstance(a, tuple): return len(a)==len(b) and all(allclose(o, p, atol) for o,p in zip(a, b))
    return a.shape==b.shape and torch.allclose(a, b, atol=atol)

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_conv_linear_equal_loop(low_mem):
    x = torch.randn(2, 4, 3, 8, 8)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    out = TimeDistributed(conv, low_mem=low_mem)(x)
    assert out.shape == (2, 4, 5, 4, 4)
    assert allclose(out, loop_over_time(conv, x))
    lin = nn.Linear(6, 2)
    v = torch.randn(3, 7, 6)
    assert allclose(TimeDistributed(lin, low_mem=low_mem)(v), loop_over_time(lin, v))

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_kwargs(low_mem):
    m, x, bias = Scaled(), torch.randn(2, 3, 3, 6, 6), torch.randn(4)
    out = TimeDistributed(m, low_mem=low_mem)(x, scale=2., bias=bias)
    assert allclose(out, loop_over_time(m, x, scale=2., bias=bias))
    assert not allclose(out, TimeDistributed(m, low_mem=low_mem)(x))  # the kwargs really were used

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_tuple_output(low_mem):
    m, x = TwoOut(), torch.randn(2, 5, 3, 6, 6)
    out = TimeDistributed(m, low_mem=low_mem)(x, shift=0.5)
    assert isinstance(out, tuple) and out[0].shape == (2, 5, 2, 6, 6) and out[1].shape == (2, 5, 5)
    assert allclose(out, loop_over_time(m, x, shift=0.5))

def test_time_distributed_namedtuple_and_dict_outputs():
    from collections import namedtuple
    Out = namedtuple('Out', 'feats score')
    class NT(nn.Module):
        def forward(self, x): return Out(x*2, x.sum((1, 2, 3)))
    class D(nn.Module):
        def forward(self, x): return dict(feats=x*2, score=x.sum((1, 2, 3)))
    x = torch.randn(2, 3, 1, 4, 4)
    for low_mem in (False, True):
        o = TimeDistributed(NT(), low_mem=low_mem)(x)
        assert isinstance(o, Out) and torch.allclose(o.feats, x*2) and torch.allclose(o.score, x.sum((2, 3, 4)))
        d = TimeDistributed(D(), low_mem=low_mem)(x)
        assert set(d) == {'feats', 'score'} and torch.allclose(d['score'], x.sum((2, 3, 4)))

def test_time_distributed_low_mem_equals_fast_path():
    for m, kw in [(nn.Conv2d(3, 4, 3), {}), (Scaled(), dict(scale=0.3, bias=torch.ones(4))), (TwoOut(), dict(shift=-1.))]:
        x = torch.randn(3, 4, 3, 7, 7)
        assert allclose(TimeDistributed(m, low_mem=True)(x, **kw), TimeDistributed(m)(x, **kw))

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_non_contiguous(low_mem):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 6, 6).transpose(1, 2)  # (B,T,C,H,W) view of a (B,C,T,H,W) tensor
    assert not x.is_contiguous()
    assert allclose(TimeDistributed(conv, low_mem=low_mem)(x), loop_over_time(conv, x))
    lin = nn.Linear(4, 3)
    v = torch.randn(4, 5, 2).permute(2, 1, 0)  # (2,5,4), non-contiguous
    assert not v.is_contiguous()
    assert allclose(TimeDistributed(lin, low_mem=low_mem)(v), loop_over_time(lin, v))

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_tdim2(low_mem):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 6, 6)  # (B,C,T,H,W)
    out = TimeDistributed(conv, low_mem=low_mem, tdim=2)(x)
    assert out.shape == (2, 4, 5, 6, 6)
    assert allclose(out, loop_over_time(conv, x, tdim=2))
    x = torch.randn(2, 3, 4, 6, 6)  # T=4: per-step (B,F) outputs come back (B,F,T), time at `tdim` as for the inputs
    m = TwoOut()
    out = TimeDistributed(m, low_mem=low_mem, tdim=2)(x)
    assert out[0].shape == (2, 2, 4, 6, 6) and out[1].shape == (2, 5, 4)
    assert allclose(out, loop_over_time(m, x, tdim=2))

@pytest.mark.parametrize('low_mem', [False, True])
def test_time_distributed_gradients(low_mem):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 3, 6, 6, requires_grad=True)
    TimeDistributed(conv, low_mem=low_mem)(x.transpose(1, 2)).pow(2).sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None; conv.weight.grad = None
    loop_over_time(conv, x.transpose(1, 2)).pow(2).sum().backward()
    assert gx.abs().sum() > 0 and gw.abs().sum() > 0
    assert torch.allclose(gx, x.grad, atol=1e-5) and torch.allclose(gw, conv.weight.grad, atol=1e-4)

def test_time_distributed_in_sequential_and_repr():
    m = nn.Sequential(TimeDistributed(nn.Conv2d(1, 2, 3, padding=1)), TimeDistributed(nn.Flatten()), TimeDistributed(nn.Linear(2*4*4, 3)))
    assert m(torch.randn(5, 6, 1, 4, 4)).shape == (5, 6, 3)
    assert 'TimeDistributed(Conv2d' in repr(m)

@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(3, 7), w=st.integers(3, 7),
       low_mem=st.booleans(), tdim=st.sampled_from([1, 2]), transpose=st.booleans())
def test_property_time_distributed_equals_loop(b, t, c, h, w, low_mem, tdim, transpose):
    torch.manual_seed(b*1000 + t*100 + c*10 + h)
    conv = nn.Conv2d(c, 2, 3, padding=1)
    shape = [b, c, h, w]
    shape.insert(tdim, t)
    x = torch.randn(*shape)
    if transpose: x = x.transpose(-1, -2)  # non-contiguous, (h,w) swapped
    out = TimeDistributed(conv, low_mem=low_mem, tdim=tdim)(x)
    ref = loop_over_time(conv, x, tdim=tdim)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)

# ---------------------------------------------------------------- StackUnstack / UnstackStack / StackLoss
class FrameListModel(nn.Module):
    "A model written for a list of `(B,C,H,W)` frames: each output frame mixes its input with the previous one"
    def __init__(self, c=2): super().__init__(); self.conv = nn.Conv2d(2*c, c, 3, padding=1)
    def forward(self, frames):
        assert isinstance(frames, list) and all(f.ndim==4 for f in frames)
        prev = [frames[0]] + frames[:-1]
        return [self.conv(torch.cat([f, p], dim=1)) for f,p in zip(frames, prev)]

class FrameArgsModel(nn.Module):
    "A model taking the frames as separate positional args and returning a tuple"
    def forward(self, *frames): return tuple(f*2 + i for i,f in enumerate(frames))

class SeqModel(nn.Module):
    "A model written for `(B,T,C,H,W)` tensors, like the moving_mnist package's `SimpleModel`: mixes each frame with the previous one"
    def __init__(self, c=2): super().__init__(); self.conv = nn.Conv2d(2*c, c, 3, padding=1)
    def forward(self, x):
        assert isinstance(x, Tensor) and x.ndim==5, f"expected a 5-D tensor, got {type(x)}"
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
        b,t = x.shape[:2]
        return self.conv(torch.cat([x, prev], dim=2).flatten(0, 1)).reshape(b, t, -1, *x.shape[-2:])

def package_stack_unstack(module, x, dim=1):
    "The moving_mnist package's description, written out: stack the list of frames, run `module`, unstack its output"
    return list(module(torch.stack(list(x), dim=dim)).unbind(dim))

def test_stack_unstack_package_meaning():
    torch.manual_seed(5)
    m = SeqModel()
    x = torch.randn(3, 4, 2, 5, 5)
    frames = list(x.unbind(1))
    ref = package_stack_unstack(m, frames)
    su = StackUnstack(m)
    for inp in (frames, tuple(frames)):   # a list or a tuple of (B,C,H,W) frames in -> a list of frames out
        out = su(inp)
        assert isinstance(out, list) and len(out) == 4 and all(o.shape == (3, 2, 5, 5) for o in out)
        assert all(torch.allclose(o, r, atol=1e-6) for o,r in zip(out, ref))
    out5 = su(x)   # a 5-D tensor goes straight to the module: the same numbers, as one tensor
    assert isinstance(out5, Tensor) and torch.allclose(out5, m(x)) and torch.allclose(out5, torch.stack(ref, 1), atol=1e-6)
    # dim=2: frames stacked to (B,C,T,H,W)
    mt = lambda z: m(z.transpose(1, 2)).transpose(1, 2)
    out2 = StackUnstack(mt, dim=2)(frames)
    assert all(torch.allclose(o, r, atol=1e-6) for o,r in zip(out2, package_stack_unstack(mt, frames, dim=2)))
    assert all(torch.allclose(o, r, atol=1e-6) for o,r in zip(out2, ref))
    # an output without the time axis (a classifier's (B,n)) is returned as is, not split into n "frames"
    clf = StackUnstack(lambda z: z.mean((1, 3, 4)))
    assert torch.allclose(clf(frames), x.mean((1, 3, 4)))
    # gradients flow to the frames and the module
    fs = [f.clone().requires_grad_() for f in frames]
    sum(o.sum() for o in StackUnstack(m)(fs)).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs) and m.conv.weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match='StackUnstack'): StackUnstack(m)([])

def test_stack_unstack_and_unstack_stack_are_inverse_bridges():
    "A 5-D model wrapped for frames, then wrapped back for 5-D batches, is the model again"
    torch.manual_seed(6)
    m = SeqModel()
    x = torch.randn(2, 3, 2, 4, 4)
    assert torch.allclose(UnstackStack(StackUnstack(m))(x), m(x), atol=1e-6)
    fl = FrameListModel()
    frames = list(x.unbind(1))
    assert all(torch.allclose(a, b, atol=1e-6) for a,b in zip(StackUnstack(UnstackStack(fl))(frames), fl(frames)))

def test_unstack_stack_tensor_and_tuple():
    torch.manual_seed(2)
    m = FrameListModel()
    x = torch.randn(3, 4, 2, 5, 5)
    frames = list(x.unbind(1))
    ref = torch.stack(m(frames), dim=1)
    su = UnstackStack(m)
    out = su(x)  # 5-D in -> 5-D out
    assert out.shape == (3, 4, 2, 5, 5) and torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(su(tuple(frames)), ref, atol=1e-6)  # a tuple of frames in
    assert torch.allclose(su(*frames), ref, atol=1e-6)  # frames as separate args
    # dim=2: (B,C,T,H,W)
    assert torch.allclose(UnstackStack(m, dim=2)(x.transpose(1, 2)), ref.transpose(1, 2), atol=1e-6)
    # a model taking the frames as positional args
    y = UnstackStack(FrameArgsModel(), as_list=False)(x)
    assert torch.allclose(y, x*2 + torch.arange(4.).view(1, 4, 1, 1, 1))

def test_unstack_stack_gradients():
    m = FrameListModel()
    x = torch.randn(2, 3, 2, 4, 4, requires_grad=True)
    UnstackStack(m)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and m.conv.weight.grad.abs().sum() > 0

@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(1, 6), dim=st.sampled_from([1, 2]))
def test_property_unstack_stack_round_trip(b, t, c, h, dim):
    shape = [b, c, h, h]
    shape.insert(dim, t)
    x = torch.randn(*shape)
    ident = UnstackStack(lambda frames: list(frames), dim=dim)
    assert torch.equal(ident(x), x)  # unstack then stack back is the identity
    assert torch.equal(ident(tuple(x.unbind(dim))), x)
    # a per-frame op through UnstackStack equals TimeDistributed of that op
    per_frame = UnstackStack(lambda frames: [torch.tanh(f)*3 for f in frames], dim=dim)
    assert torch.allclose(per_frame(x), TimeDistributed(nn.Tanh(), tdim=dim)(x)*3)

@pytest.mark.parametrize('loss_func', [MSELossFlat(), L1LossFlat(), F.mse_loss])
def test_stack_loss(loss_func):
    torch.manual_seed(3)
    pred, targ = torch.randn(3, 4, 2, 5, 5), torch.randn(3, 4, 2, 5, 5)
    plain = loss_func(pred, targ)
    sl = StackLoss(loss_func)
    for p in (pred, tuple(pred.unbind(1)), list(pred.unbind(1))):
        for t in (targ, tuple(targ.unbind(1))):
            assert torch.allclose(sl(p, t), plain)
    assert plain > 0

def test_stack_loss_passes_activation_decodes_and_kwargs():
    sl = StackLoss(MSELossFlat())
    x = torch.randn(2, 3, 1, 4, 4)
    assert torch.equal(sl.activation(x), x) and torch.equal(sl.decodes(x), x)
    p, t = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(StackLoss(F.mse_loss)(p, t, reduction='sum'), F.mse_loss(p, t, reduction='sum'))
    from fastai.losses import CrossEntropyLossFlat
    ce = StackLoss(CrossEntropyLossFlat())
    logits = torch.randn(4, 3)
    assert torch.allclose(ce.activation(logits), F.softmax(logits, dim=-1))
    assert torch.equal(ce.decodes(logits), logits.argmax(-1))
