"""Mixed precision: `learn.to_bf16()` autocasts every registered arch on the CPU (fastai_seq.distributed makes fastai's
`MixedPrecision` autocast on the model's device); `to_fp16()`/`to_bf16()` on a GPU when there is one"""
import warnings
import numpy as np, pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import TensorCategory
from fastai.callback.fp16 import MixedPrecision
import fastai_seq.all  # noqa: F401  (registers every arch)
import fastai_seq.distributed  # noqa: F401  (autocast on the model's device; `fastai_seq.all` imports it too)
from fastai_seq.core import ImageSeq
from fastai_seq.registry import list_archs, arch_info
from fastai_seq.learner import seq_learner
from fastai_seq.distributed import cpu_bf16_conv3d_ok

ARCHS = list_archs()
GPU = torch.cuda.is_available()

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny models: threads gain nothing on a busy 2-core machine"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

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
    "Forward hooks recording the output dtypes of the model's convolutions and linear layers"
    def __init__(self, model):
        self.dtypes = set()
        self.hooks = [m.register_forward_hook(self.hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
    def hook(self, m, inp, out):
        if isinstance(out, torch.Tensor) and torch.is_grad_enabled(): self.dtypes.add(out.dtype)
    def remove(self):
        for h in self.hooks: h.remove()

def _train_mixed(arch:str, precision:str, device='cpu', warns:list=None):
    "Train `arch` for two steps and validate under `precision`; the learner, its initial weights and the autocast dtypes"
    task = arch_info(arch).task
    torch.manual_seed(0)
    learn = seq_learner(tensor_dls(task, device=device), arch)
    learn = learn.to_bf16() if precision=='bf16' else learn.to_fp16()
    before = {n: p.detach().clone() for n,p in learn.model.named_parameters()}
    spy = DtypeSpy(learn.model)
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            learn.fit(1, 1e-3)
    finally: spy.remove()
    if warns is not None: warns.extend(str(w.message) for w in ws)
    return learn, before, spy.dtypes

def _check(learn, before, dtypes, dtype):
    assert any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    assert dtype in dtypes, f"no layer ran in {dtype} (autocast not active): {dtypes}"
    losses = [float(l) for l in learn.recorder.losses]
    assert len(losses)==2 and all(np.isfinite(losses))   # 8 training items, bs=4: two steps
    assert np.isfinite(learn.recorder.values[-1]).all()  # the validation loss and metrics too
    params = dict(learn.model.named_parameters())
    assert all(p.dtype==torch.float32 for p in params.values()), "autocast must leave the parameters in float32"
    assert any(not torch.equal(params[n].detach().cpu(), b.cpu()) for n,b in before.items()), "no parameter was updated"
    if isinstance(learn.pred, torch.Tensor): assert learn.pred.dtype==torch.float32   # `MixedPrecision.after_pred`

@pytest.mark.parametrize('arch', ARCHS)
def test_bf16_cpu_autocast(arch):
    "`to_bf16()` on a CPU learner: bfloat16 autocast inside the layers, a finite loss, parameters kept in float32"
    ws = []
    learn, before, dtypes = _train_mixed(arch, 'bf16', warns=ws)
    assert not any('autocast' in w.lower() and 'cuda' in w.lower() for w in ws), ws   # fastai's "Disabling autocast"
    if any(isinstance(m, nn.Conv3d) for m in learn.model.modules()) and not cpu_bf16_conv3d_ok():
        # fastai_seq warns here ('NaN weight gradients for bfloat16 Conv3d'); whether the warning reaches `ws` depends on
        # which tests ran before in the process (seen in CI), so only the known torch bug is asserted
        pytest.xfail(f"torch {torch.__version__}: oneDNN gives NaN weight gradients to bfloat16 Conv3d over 2 frames on "
                     "the CPU (fastai_seq warns)")
    _check(learn, before, dtypes, torch.bfloat16)

def test_bf16_cpu_autocast_is_fastai_callback():
    "The patched `MixedPrecision` autocasts on the model's device: CPU here, and nothing is left active after `fit`"
    learn, *_ = _train_mixed('convgru', 'bf16')
    cb = next(cb for cb in learn.cbs if isinstance(cb, MixedPrecision))
    assert cb.autocast is None and not torch.is_autocast_enabled('cpu')
    learn.to_fp32()
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)

def test_fp16_cpu_autocast():
    "`to_fp16()` on a CPU learner autocasts to float16 with a CPU `GradScaler` (fastai's CUDA one would be disabled)"
    learn, before, dtypes = _train_mixed('convgru', 'fp16')
    _check(learn, before, dtypes, torch.float16)

@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU: fp16/bf16 mixed precision on a GPU")
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('arch', ARCHS)
def test_mixed_precision_gpu(arch, precision):
    "`to_fp16()` and `to_bf16()` on a GPU: half-precision autocast, finite losses, float32 parameters"
    if precision=='bf16' and not torch.cuda.is_bf16_supported(): pytest.skip("this GPU has no bfloat16")
    learn, before, dtypes = _train_mixed(arch, precision, device='cuda')
    _check(learn, before, dtypes, torch.bfloat16 if precision=='bf16' else torch.float16)
