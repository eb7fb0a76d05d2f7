"""Mixed precision (fastai_seq/precision.py): `to_bf16()`/`to_fp16()` autocast a CPU model only where the CPU has that
precision natively (else a warning and float32), run in float32 what oneDNN cannot do in low precision, and leave
autocast exactly as they found it whatever way a fit ends. CI runs this file a second time under
`ONEDNN_MAX_CPU_ISA=AVX2`, so a machine with AVX-512/AMX cannot hide an AVX2-only failure."""
import os, pickle, subprocess, sys, warnings
import numpy as np, pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import TensorCategory
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.fp16 import MixedPrecision
import fastai_seq.all  # noqa: F401  (registers every arch, patches MixedPrecision)
from fastai_seq.core import ImageSeq
from fastai_seq.registry import list_archs, arch_info
from fastai_seq.learner import seq_learner
from fastai_seq.precision import cpu_amp_native, cpu_rnn_ok, float32_modules, Float32Forward

ARCHS = list_archs()
GPU = torch.cuda.is_available()

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: one torch thread for this module

@pytest.fixture
def force_amp(monkeypatch):
    "Autocast on the CPU whatever it supports (`FASTAI_SEQ_CPU_AMP=1`): the path a native CPU takes, on any CPU"
    monkeypatch.setenv('FASTAI_SEQ_CPU_AMP', '1')

@pytest.fixture
def auto_amp(monkeypatch):
    "The default decision: autocast where the CPU is native"
    monkeypatch.delenv('FASTAI_SEQ_CPU_AMP', raising=False)

def tensor_dls(task:str, n:int=12, bs:int=4, n_in:int=4, n_out:int=2, channels:int=3, size:int=32, n_classes:int=3,
               device='cpu') -> DataLoaders:
    "Tiny random `DataLoaders` of `ImageSeq` inputs and `ImageSeq` (forecast) or category (classify) targets"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, n_in+n_out, channels, size, size, generator=g)
    if task=='forecast': items = [(ImageSeq(s[:n_in]), ImageSeq(s[n_in:])) for s in x]
    else: items = [(ImageSeq(s[:n_in]), TensorCategory(i%n_classes)) for i,s in enumerate(x)]
    dls = DataLoaders(DataLoader(items[:n-bs], bs=bs, shuffle=True, device=device),
                      DataLoader(items[n-bs:], bs=bs, device=device), device=device)
    if task=='classify': dls.c = n_classes
    return dls

class DtypeSpy:
    "Forward hooks recording the output dtypes of the model's convolutions, linear and recurrent layers while training"
    def __init__(self, model):
        self.dtypes, self.rnn_dtypes = set(), set()
        self.hooks = [m.register_forward_hook(self.hook) for m in model.modules()
                      if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase))]
    def hook(self, m, inp, out):
        if isinstance(out, tuple): out = out[0]
        if isinstance(out, torch.Tensor) and torch.is_grad_enabled():
            (self.rnn_dtypes if isinstance(m, nn.RNNBase) else self.dtypes).add(out.dtype)
    def remove(self):
        for h in self.hooks: h.remove()

def _train_mixed(arch:str, precision:str, device='cpu', warns:list=None, **kw):
    "Train `arch` for two steps and validate under `precision`; the learner, its initial weights and the spy"
    task = arch_info(arch).task
    torch.manual_seed(0)
    learn = seq_learner(tensor_dls(task, device=device), arch, **kw)
    learn = learn.to_bf16() if precision=='bf16' else learn.to_fp16()
    before = {n: p.detach().clone() for n,p in learn.model.named_parameters()}
    spy = DtypeSpy(learn.model)
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            learn.fit(1, 1e-3)
    finally: spy.remove()
    if warns is not None: warns.extend(str(w.message) for w in ws)
    return learn, before, spy

def _check(learn, before, spy, dtype):
    assert any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    f32 = tuple(float32_modules(learn.model, dtype))  # the layers this CPU must run in float32 (e.g. Conv3d, buggy in bf16)
    low = [m for m in learn.model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)) and not isinstance(m, f32)]
    if low: assert dtype in spy.dtypes, f"no layer ran in {dtype}: {spy.dtypes}"
    else: assert spy.dtypes=={torch.float32}, spy.dtypes  # all its layers are of those (S3D: Conv3d only): all float32
    losses = [float(l) for l in learn.recorder.losses]
    assert len(losses)==2 and all(np.isfinite(losses))   # 8 training items, bs=4: two steps
    assert np.isfinite(learn.recorder.values[-1]).all()  # the validation loss and metrics too
    params = dict(learn.model.named_parameters())
    assert all(p.dtype==torch.float32 for p in params.values()), "autocast must leave the parameters in float32"
    assert any(not torch.equal(params[n].detach().cpu(), b.cpu()) for n,b in before.items()), "no parameter was updated"
    if isinstance(learn.pred, torch.Tensor): assert learn.pred.dtype==torch.float32   # `MixedPrecision.after_pred`
    assert not torch.is_autocast_enabled('cpu')

def _hooks_left(model) -> int:
    "How many of fastai_seq's float32 hooks are on `model` (DynamicUnet has hooks of its own)"
    return sum(isinstance(getattr(h, '__self__', None), Float32Forward)
               for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()])

def test_native_decision_follows_onednn_isa():
    "Under `ONEDNN_MAX_CPU_ISA=AVX2` neither bf16 nor fp16 is native (whatever this CPU is); the default follows it"
    code = ("from fastai_seq.precision import cpu_amp_native as n, cpu_amp_enabled as e; "
            "print(n('bf16'), n('fp16'), e('bf16'), e('fp16'))")
    env = {**os.environ, 'ONEDNN_MAX_CPU_ISA': 'AVX2'}
    env.pop('FASTAI_SEQ_CPU_AMP', None)
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode==0, out.stderr
    assert out.stdout.split()==['False']*4
    with pytest.raises(ValueError, match="'bf16' or 'fp16'"): cpu_amp_native('fp32')

@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
@pytest.mark.parametrize('arch', ['convgru', 'frames_lstm'])
def test_cpu_default_native_or_float32(arch, precision, auto_amp):
    "By default a CPU autocasts only where it is native; elsewhere one clear warning and training in float32"
    ws = []
    learn, before, spy = _train_mixed(arch, precision, warns=ws)
    dtype = torch.bfloat16 if precision=='bf16' else torch.float16
    if cpu_amp_native(precision): _check(learn, before, spy, dtype)
    else:
        assert spy.dtypes=={torch.float32}, spy.dtypes
        msgs = [w for w in ws if f'to_{precision}()' in w]
        assert len(msgs)==1 and 'training in float32' in msgs[0] and 'FASTAI_SEQ_CPU_AMP=1' in msgs[0], ws
        assert np.isfinite([float(l) for l in learn.recorder.losses]).all()
    assert not any('autocast' in w.lower() and 'cuda' in w.lower() for w in ws), ws   # fastai's "Disabling autocast"

@pytest.mark.parametrize('arch', ARCHS)
def test_bf16_cpu_autocast(arch, force_amp):
    "Forced CPU bf16 autocast trains every arch: low-precision layers, finite losses, oneDNN's gaps run in float32"
    learn, before, spy = _train_mixed(arch, 'bf16')
    _check(learn, before, spy, torch.bfloat16)
    if spy.rnn_dtypes and not cpu_rnn_ok(torch.bfloat16): assert spy.rnn_dtypes=={torch.float32}
    assert _hooks_left(learn.model)==0, "the float32 hooks must go with the fit"

def test_fp16_rnn_runs_float32(force_amp):
    "Where oneDNN has no low-precision LSTM (float16 on every CPU so far), the LSTM runs in float32 inside autocast"
    learn, before, spy = _train_mixed('frames_lstm', 'fp16')
    _check(learn, before, spy, torch.float16)
    assert spy.rnn_dtypes=={torch.float32 if not cpu_rnn_ok(torch.float16) else torch.float16}
    assert (nn.LSTM in float32_modules(learn.model, torch.float16))==(not cpu_rnn_ok(torch.float16))

def test_fp16_cpu_autocast(force_amp):
    "`to_fp16()` on a CPU learner autocasts to float16 with a CPU `GradScaler` (fastai's CUDA one would be disabled)"
    learn, before, spy = _train_mixed('convgru', 'fp16')
    _check(learn, before, spy, torch.float16)

def test_autocast_is_fastai_callback(force_amp):
    "The patched `MixedPrecision` autocasts on the model's device and nothing is left active after `fit`; export pickles"
    learn, *_ = _train_mixed('frames_lstm', 'bf16')
    cb = next(cb for cb in learn.cbs if isinstance(cb, MixedPrecision))
    assert cb.autocast is None and not torch.is_autocast_enabled('cpu')
    pickle.dumps(learn.model)
    learn.to_fp32()
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)

class Boom(Exception): pass

class RaiseAt(Callback):
    "Raise `exc` at event `at` of the first training batch"
    order = 50   # after MixedPrecision (10): its autocast region is open during `after_pred`
    def __init__(self, at:str, exc): self.at,self.exc = at,exc
    def __getattr__(self, k):
        if k==self.__dict__.get('at'):
            def _f():
                if self.training: raise self.exc
            return _f
        return super().__getattr__(k)

class RaisingLoss:
    "A loss that raises: the failure comes after the forward pass, inside the autocast region"
    def __call__(self, pred, targ): raise Boom('loss')

@pytest.mark.parametrize('where', ['forward', 'loss', 'after_pred', 'cancel_fit', 'interrupt'])
@pytest.mark.parametrize('outer', [False, True])
def test_failed_fit_leaves_autocast_as_found(where, outer, force_amp):
    "A fit that raises or is cancelled inside a batch leaves autocast as it was, the model unhooked, fp32 training fine"
    torch.manual_seed(0)
    learn = seq_learner(tensor_dls('classify'), 'frames_lstm').to_bf16()
    if where=='forward':
        def _raise(m, args): raise Boom('forward')
        h = learn.model.register_forward_pre_hook(_raise)
    elif where=='loss': learn.loss_func = RaisingLoss()
    elif where=='after_pred': learn.add_cb(RaiseAt('after_pred', Boom('after_pred')))
    elif where=='cancel_fit': learn.add_cb(RaiseAt('after_pred', CancelFitException()))
    else: learn.add_cb(RaiseAt('after_pred', KeyboardInterrupt()))
    ctx = torch.autocast('cpu', dtype=torch.float16) if outer else torch.autocast('cpu', enabled=False)
    with ctx:
        state = torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu')
        try: learn.fit(1, 1e-3)
        except (Boom, KeyboardInterrupt): pass
        assert (torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'))==state
    assert not torch.is_autocast_enabled('cpu')
    if where=='forward': h.remove()
    assert _hooks_left(learn.model)==0
    learn.cbs = learn.cbs.filter(lambda cb: not isinstance(cb, RaiseAt))
    learn.loss_func = seq_learner(tensor_dls('classify'), 'frames_lstm').loss_func
    learn.to_fp32().fit(1, 1e-3)    # training goes on in float32, unaffected
    assert np.isfinite([float(l) for l in learn.recorder.losses]).all()

@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU: fp16/bf16 mixed precision on a GPU")
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('arch', ARCHS)
def test_mixed_precision_gpu(arch, precision):
    "`to_fp16()` and `to_bf16()` on a GPU: half-precision autocast, finite losses, float32 parameters"
    if precision=='bf16' and not torch.cuda.is_bf16_supported(): pytest.skip("this GPU has no bfloat16")
    learn, before, spy = _train_mixed(arch, precision, device='cuda')
    _check(learn, before, spy, torch.bfloat16 if precision=='bf16' else torch.float16)
