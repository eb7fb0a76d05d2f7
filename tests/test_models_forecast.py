"Every registered forecasting arch: shapes, gradients, batch of one, odd sizes, pickling; PhyDNet's constraint callback"
import io, pickle
import pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.callback.core import Callback
from fastai_seq.registry import list_archs, arch_info
from fastai_seq.models.convrnn import ConvGRUNet, ConvRNN, ConvGRUCell, ConvLSTMCell
from fastai_seq.models.phydnet import (PhyDNet, PhyDNetConstraintCallback, TeacherForcingCallback, moment_matrix,
                                       kernel_moments)

ARCHS = list_archs(task='forecast')

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: one torch thread for this module

def build(arch, n_in=4, n_out=3, channels=1, size=(16,16), **kwargs):
    torch.manual_seed(0)
    return arch_info(arch).builder(n_in=n_in, n_out=n_out, channels=channels, size=size, **kwargs)

def test_registry_has_the_forecasting_archs():
    assert {'unet', 'convgru', 'convlstm', 'phydnet', 'simvp', 'seq2seq'} <= set(ARCHS)
    for a in ARCHS:
        info = arch_info(a)
        assert info.task=='forecast' and info.doc and 'lr' in info.defaults

def _check_grads(m, x, n_out):
    # small noise on every parameter breaks zero inits (BatchNorm zero gammas, attention gammas),
    # so that any parameter without a gradient is one that is not used
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p)*1e-2)
    y = m(x)
    assert y.shape == (x.shape[0], n_out, *x.shape[2:])
    assert torch.isfinite(y).all()
    ((y - torch.rand_like(y))**2).mean().backward()
    for n,p in m.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"{n} got a zero gradient"

@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('channels', [1, 3])
def test_forward_backward(arch, channels):
    m = build(arch, channels=channels).train()
    _check_grads(m, torch.rand(2, 4, channels, 16, 16), 3)

@pytest.mark.parametrize('arch', ARCHS)
def test_more_outputs_than_inputs(arch):
    m = build(arch, n_in=2, n_out=5).train()
    y = m(torch.rand(2, 2, 1, 16, 16))
    assert y.shape == (2, 5, 1, 16, 16) and torch.isfinite(y).all()

@pytest.mark.parametrize('arch', ARCHS)
def test_batch_of_one(arch):
    m = build(arch, channels=3)
    x = torch.rand(1, 4, 3, 16, 16)
    m.train()
    y = m(x)
    y.mean().backward()
    assert y.shape == (1, 3, 3, 16, 16) and torch.isfinite(y).all()
    m.eval()
    with torch.no_grad(): y1,y2 = m(x),m(torch.cat([x, torch.rand_like(x)]))
    # in eval mode a sample's prediction does not depend on the rest of the batch
    assert torch.allclose(y1[0], y2[0], atol=1e-5)

@pytest.mark.parametrize('arch', ARCHS)
def test_non_square(arch):
    m = build(arch, size=(16,32), channels=2).eval()
    with torch.no_grad(): y = m(torch.rand(2, 4, 2, 16, 32))
    assert y.shape == (2, 3, 2, 16, 32) and torch.isfinite(y).all()

@pytest.mark.parametrize('arch', ARCHS)
def test_pickle_roundtrip(arch):
    m = build(arch).eval()
    x = torch.rand(2, 4, 1, 16, 16)
    with torch.no_grad(): y = m(x)
    m2 = pickle.loads(pickle.dumps(m))
    buf = io.BytesIO(); torch.save(m, buf); buf.seek(0)
    m3 = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(m2(x), y, atol=1e-6)
        assert torch.allclose(m3(x), y, atol=1e-6)

@pytest.mark.parametrize('arch', ARCHS)
def test_splitter_covers_all_params(arch):
    m = build(arch)
    split = arch_info(arch).splitter
    if split is None: return
    groups = split(m)
    assert len(groups) >= 2
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in m.parameters()}

@pytest.mark.parametrize('arch', ['convgru', 'convlstm', 'phydnet', 'simvp', 'seq2seq'])
def test_bad_frame_size_is_a_clear_error(arch):
    m = build(arch)
    with pytest.raises(ValueError, match='divisible'): m(torch.rand(1, 4, 1, 18, 18))

def test_convgru_attn_blur_and_sizes():
    m = build('convgru', attn=True, blur=True, szs=(8,16), stem=()).train()
    assert m.stride == 4
    _check_grads(m, torch.rand(2, 4, 1, 12, 20), 3)
    m = build('convgru', channels=2, szs=(8,), stem=(4,8)).train()
    assert m.stride == 8
    _check_grads(m, torch.rand(1, 2, 2, 8, 24), 3)

def test_simvp_incepu_and_unet_options():
    _check_grads(build('simvp', model_type='incepu', N_T=3, hid_T=32).train(), torch.rand(2, 4, 1, 16, 16), 3)
    with pytest.raises(ValueError, match='model_type'): build('simvp', model_type='nope')
    with pytest.raises(ValueError, match='input frames'): build('simvp')(torch.rand(1, 5, 1, 16, 16))

def test_unet_is_per_frame():
    "Output frame j depends on input frame n_in-n_out+j only: no temporal modelling"
    m = build('unet', n_in=4, n_out=3).eval()
    x = torch.rand(1, 4, 1, 16, 16)
    x2 = x.clone(); x2[:, 2] = torch.rand(16, 16)
    with torch.no_grad(): y,y2 = m(x),m(x2)
    assert torch.allclose(y[:, [0, 2]], y2[:, [0, 2]], atol=1e-6)
    assert not torch.allclose(y[:, 1], y2[:, 1])

def test_conv_rnn_cells_are_recurrent():
    "The last output depends on the first input frame, and the cells keep the spatial size"
    for cell in (ConvGRUCell(3, 8), ConvLSTMCell(3, 8)):
        rnn = ConvRNN(cell).eval()
        x = torch.rand(2, 5, 3, 6, 7)
        x2 = x.clone(); x2[:, 0] += 1
        with torch.no_grad(): (o,_),(o2,_) = rnn(x),rnn(x2)
        assert o.shape == (2, 5, 8, 6, 7)
        assert not torch.allclose(o[:, -1], o2[:, -1])
        assert torch.allclose(o[:, 0, :, 0, 0], rnn(x[:, :1])[0][:, 0, :, 0, 0])
    with pytest.raises(ValueError, match='state'): ConvRNN(ConvGRUCell(0, 8))(None)

def test_convgru_decoder_unrolls_n_out_steps():
    m = ConvGRUNet(channels=1, n_out=7, szs=(8,16)).eval()
    with torch.no_grad(): y = m(torch.rand(1, 3, 1, 8, 8))
    assert y.shape == (1, 7, 1, 8, 8)

def test_kernel_moments():
    k = 7
    M = moment_matrix(k)
    delta = torch.zeros(k, k); delta[k//2, k//2] = 1
    mom = kernel_moments(delta, M)
    assert torch.allclose(mom, torch.eye(k)[0:1].T @ torch.eye(k)[0:1], atol=1e-6)
    # the kernel with one-hot moments (i,j) approximates d^(i+j)/dx^i dy^j: its moments give back the one-hot
    Minv = torch.linalg.inv(M.double())
    e = torch.zeros(k, k, dtype=torch.float64); e[1, 2] = 1
    assert torch.allclose(kernel_moments(Minv @ e @ Minv.T, M.double()), e, atol=1e-8)
    # first derivative along rows: a centred difference [-1/2, 0, 1/2] has first moment 1
    d = torch.zeros(k, k); d[k//2-1, k//2], d[k//2+1, k//2] = -.5, .5
    assert torch.allclose(kernel_moments(d, M)[1, 0], torch.tensor(1.))

class _Rec(Callback):
    order = 100
    def after_loss(self):
        if self.training: self.gaps.append((self.loss_grad - self.loss).item())
    def before_fit(self): self.gaps = []

def _dls(n=4, n_in=4, n_out=3, sz=16):
    torch.manual_seed(0)
    ds = [(torch.rand(n_in, 1, sz, sz), torch.rand(n_out, 1, sz, sz)) for _ in range(n)]
    return DataLoaders(DataLoader(ds, bs=2, shuffle=True), DataLoader(ds, bs=2))

def test_phydnet_constraint_callback():
    m = build('phydnet')
    c0 = m.constraint_loss()
    assert c0.ndim == 0 and torch.isfinite(c0) and c0 > 0
    assert arch_info('phydnet').defaults['cbs'] == (PhyDNetConstraintCallback,)
    rec = _Rec()
    learn = Learner(_dls(), m, loss_func=MSELossFlat(), cbs=[PhyDNetConstraintCallback(recon_weight=0.), rec])
    learn.fit(1, 1e-4)
    # the training loss that is back-propagated is the prediction loss plus the constraint
    assert len(rec.gaps) == 2 and all(g > 0 for g in rec.gaps)
    assert abs(rec.gaps[0] - c0.item()) < 0.05*c0.item()
    # the constraint alone can be optimized: the filters move towards the finite-difference moments
    opt = torch.optim.Adam(m.phycell.parameters(), 1e-2)
    for _ in range(20):
        opt.zero_grad(); loss = m.constraint_loss(); loss.backward(); opt.step()
    assert m.constraint_loss() < 0.5*c0

def test_phydnet_recon_and_teacher_forcing():
    m = build('phydnet')
    rec = _Rec()
    learn = Learner(_dls(), m, loss_func=MSELossFlat(), cbs=[PhyDNetConstraintCallback(weight=0.), rec, TeacherForcingCallback()])
    learn.fit(1, 1e-4)
    # the next-frame loss on the input frames is added; nothing is left on the model after fitting
    assert all(g > 0 for g in rec.gaps)
    assert not m.keep_recon and m.recon is None and m.teacher_forcing_ratio == 0
    # with teacher forcing the second prediction is made from the true first target frame
    m.train(); m.teacher_forcing_ratio = 1.
    x,y = torch.rand(2, 4, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1); p1 = m(x, y)
        y2 = y.clone(); y2[:, 0] += 1
        torch.manual_seed(1); p2 = m(x, y2)
        torch.manual_seed(1); p3 = m(x)
    assert torch.allclose(p1[:, 0], p2[:, 0], atol=1e-6) and not torch.allclose(p1[:, 1], p2[:, 1])
    assert not torch.allclose(p1[:, 1], p3[:, 1])
    m.eval()
    with torch.no_grad(): assert torch.allclose(m(x, y2), m(x), atol=1e-6)
    with pytest.raises(TypeError, match='PhyDNet'):
        Learner(_dls(), nn.Linear(1, 1), loss_func=MSELossFlat(), cbs=PhyDNetConstraintCallback()).fit(1)

def _squares(n, t, sz=32, sq=6, seed=0):
    "`n` clips of `t` frames: one bright square moving at a constant velocity, bouncing off the borders"
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, t, 1, sz, sz)
    pos = torch.randint(0, sz-sq, (n, 2), generator=g).float()
    vel = torch.randint(1, 3, (n, 2), generator=g).float() * (torch.randint(0, 2, (n, 2), generator=g)*2-1)
    for i in range(t):
        for b in range(n):
            r,c = pos[b].long().tolist()
            x[b, i, 0, r:r+sq, c:c+sq] = 1
        pos += vel
        for k in range(2):
            lo,hi = pos[:, k] < 0, pos[:, k] > sz-sq
            pos[lo, k] = -pos[lo, k]; pos[hi, k] = 2*(sz-sq) - pos[hi, k]
            vel[lo|hi, k] = -vel[lo|hi, k]
    return x

def test_convgru_learns_motion():
    "60 steps on moving squares beat both copying the last frame and predicting blank frames"
    torch.manual_seed(0)
    m = build('convgru', n_in=4, n_out=2, size=(32,32))
    xv = _squares(64, 6, seed=1)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for i in range(60):
        x = _squares(16, 6, seed=100+i)
        loss = ((m(x[:, :4]) - x[:, 4:])**2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    with torch.no_grad(): mse = ((m(xv[:, :4]) - xv[:, 4:])**2).mean().item()
    copy_last = ((xv[:, 3:4] - xv[:, 4:])**2).mean().item()
    blank = (xv[:, 4:]**2).mean().item()
    print(f"convgru {mse:.4f}, copy-last {copy_last:.4f}, blank {blank:.4f}")
    assert mse < 0.6*min(copy_last, blank)
