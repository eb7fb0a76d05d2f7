"""Mixed precision that fits the machine: `to_bf16()`/`to_fp16()` autocast on a CPU only where it computes that precision
natively, run in float32 what its oneDNN cannot do in low precision, and never leave autocast on after a failed fit

fastai's `MixedPrecision` always enters CUDA autocast; for a model on a CPU that only warns and trains in float32.
`fastai_patches.py` changes fastai's callback in these ways (for sequence learners; for every learner only the exit paths),
using the probes and hooks of this module:

* **GPU**: fastai's behaviour, plus the exit paths below.
* **CPU, native low precision**: autocast on the CPU. bfloat16 is native with AVX512-BF16 or AMX when oneDNN may use them
  (`ONEDNN_MAX_CPU_ISA` can forbid it); float16 only with AMX-FP16. `cpu_amp_native()` tells.
* **CPU, emulated low precision** (AVX2-only CPUs, AVX-512 without BF16, float16 without AMX-FP16): autocast there is
  7x to 240x slower than float32 (measured, BENCHMARKS.md), so it warns and trains in float32, as fastai does on a CPU.
  `FASTAI_SEQ_CPU_AMP=1` in the environment autocasts anyway (`=0` never does).
* Inside CPU autocast, the modules that oneDNN cannot run in that precision on this CPU run in float32 (their inputs
  cast up, autocast off for their forward): recurrent layers (`nn.LSTM`, `nn.GRU`, `nn.RNN`) when a tiny probe of them
  fails ("could not create a primitive descriptor for the LSTM forward propagation primitive" on AVX2 CPUs and for
  float16), and `nn.Conv3d` when this torch gives NaN weight gradients to bfloat16 Conv3d over 2 frames (a oneDNN bug).
* Autocast is exited wherever a batch ends: `after_loss` as in fastai, and also after a cancelled batch, in `after_fit`
  and `after_cancel_fit`, and when an exception leaves a batch (`Learner.one_batch` closes it on the way out), so a fit
  that raises or is cancelled leaves `torch.is_autocast_enabled()` exactly as it found it.
"""
from __future__ import annotations
import os, warnings
from functools import lru_cache
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['cpu_amp_native', 'cpu_rnn_ok', 'cpu_bf16_conv3d_ok', 'cpu_amp_enabled', 'float32_modules', 'model_device']

# oneDNN's `ONEDNN_MAX_CPU_ISA` values that allow native bfloat16 / float16 kernels (the others stop below them)
_BF16_ISAS = {'AVX2_VNNI_2', 'AVX512_CORE_BF16', 'AVX512_CORE_FP16', 'AVX10_1_512', 'AVX512_CORE_AMX', 'AVX10_1_512_AMX',
              'AVX512_CORE_AMX_FP16', 'AVX10_1_512_AMX_FP16', 'AVX10_2_512', 'AVX10_2_512_AMX_2', 'ALL', 'DEFAULT'}
_FP16_ISAS = {'AVX512_CORE_AMX_FP16', 'AVX10_1_512_AMX_FP16', 'AVX10_2_512_AMX_2', 'ALL', 'DEFAULT'}

def _cpu_has(name:str) -> bool:
    f = getattr(torch.cpu, f'_is_{name}_supported', None)
    try: return bool(f()) if f is not None else False
    except RuntimeError: return False

def _mkldnn_has(name:str) -> bool:
    f = getattr(torch.ops.mkldnn, f'_is_mkldnn_{name}_supported', None)
    try: return bool(f()) if f is not None else False
    except (RuntimeError, AttributeError): return False

@lru_cache(maxsize=None)
def cpu_amp_native(
    precision:str='bf16', # 'bf16' or 'fp16'
) -> bool:
    "Whether this CPU, as oneDNN may use it (`ONEDNN_MAX_CPU_ISA`), computes `precision` natively (autocast is then faster)"
    if precision not in ('bf16', 'fp16'): raise ValueError(f"precision must be 'bf16' or 'fp16', got {precision!r}")
    if not torch.backends.mkldnn.is_available(): return False
    isa = os.environ.get('ONEDNN_MAX_CPU_ISA', '').strip().upper()
    if precision=='bf16':
        return ((not isa or isa in _BF16_ISAS) and _mkldnn_has('bf16')
                and (_cpu_has('avx512_bf16') or _cpu_has('amx_tile')))
    return (not isa or isa in _FP16_ISAS) and _mkldnn_has('fp16') and _cpu_has('amx_fp16')

def cpu_amp_enabled(
    precision:str='bf16', # 'bf16' or 'fp16'
) -> bool:
    "Whether `to_bf16()`/`to_fp16()` autocast a CPU model: `FASTAI_SEQ_CPU_AMP` (1/0) when set, else `cpu_amp_native`"
    env = os.environ.get('FASTAI_SEQ_CPU_AMP', '').strip().lower()
    if env in ('1', 'true', 'yes', 'force'): return True
    if env in ('0', 'false', 'no', 'never'): return False
    return cpu_amp_native(precision)

@lru_cache(maxsize=None)
def cpu_rnn_ok(
    dtype:torch.dtype=torch.bfloat16, # The autocast dtype
) -> bool:
    "Whether oneDNN runs `nn.LSTM` and `nn.GRU` forward and backward under CPU autocast to `dtype` on this CPU"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for cls in (nn.LSTM, nn.GRU):
                m, x = cls(4, 4, batch_first=True), torch.randn(2, 3, 4, requires_grad=True)
                with torch.autocast('cpu', dtype=dtype): y = m(x)[0]
                y.float().sum().backward()
                if not torch.isfinite(x.grad).all(): return False
    except RuntimeError: return False
    return True

@lru_cache(maxsize=None)
def cpu_bf16_conv3d_ok() -> bool:
    "False when this torch computes NaN weight gradients for bfloat16 `Conv3d` on 2 frames on the CPU (a oneDNN bug)"
    # Seen with torch 2.14 (oneDNN): a (3,1,1) temporal conv with padding 1 over an input of 2 frames gets NaN weight
    # gradients in bfloat16 (float32 is fine, and so is the slow non-oneDNN path). R(2+1)D halves the clip length
    # stage by stage, so its clips pass through 2 frames whatever their length.
    # On some CPUs (seen on an AMD EPYC) the NaNs come in only part of the calls, as if from uninitialised memory: one
    # clean call proves nothing, so probe 60 calls over several shapes and clip lengths (under 0.3 s, once a process)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for _ in range(12):
                for ci,co,h,t in ((16,16,4,2), (64,64,8,2), (128,128,4,1), (32,32,8,4), (96,96,7,2)):
                    x = torch.randn(4, ci, t, h, h).bfloat16()
                    w = torch.randn(co, ci, 3, 1, 1).bfloat16().requires_grad_()
                    F.conv3d(x, w, None, 1, (1,0,0)).float().sum().backward()
                    if not torch.isfinite(w.grad).all(): return False
    except RuntimeError: return False
    return True

def _up(o):
    "`o` with its low-precision floating tensors cast to float32 (tuples, lists and dicts followed)"
    if isinstance(o, torch.Tensor): return o.float() if o.dtype in (torch.float16, torch.bfloat16) else o
    if isinstance(o, (tuple, list)): return type(o)(_up(x) for x in o)
    if isinstance(o, dict): return {k:_up(v) for k,v in o.items()}
    return o

class Float32Forward:
    "Forward hooks that run one module in float32 inside CPU autocast (a picklable object, holding no learner)"
    def __init__(self): self.ctxs = []
    def pre(self, m, args, kwargs):
        ctx = torch.autocast('cpu', enabled=False)
        ctx.__enter__()
        self.ctxs.append(ctx)
        return _up(args), _up(kwargs)
    def post(self, m, args, kwargs, out):
        if self.ctxs: self.ctxs.pop().__exit__(None, None, None)
    def __getstate__(self): return {'ctxs': []}

def float32_modules(model:nn.Module, dtype:torch.dtype) -> list[type]:
    "The module types of `model` that must run in float32 under CPU autocast to `dtype` on this CPU"
    types = []
    if not cpu_rnn_ok(dtype): types.append(nn.RNNBase)
    if dtype==torch.bfloat16 and not cpu_bf16_conv3d_ok(): types.append(nn.Conv3d)
    if not types: return []
    return [type(m) for m in model.modules() if isinstance(m, tuple(types))]

def hook_float32(
    model:nn.Module, # The model trained under CPU autocast
    types:list, # Module types to run in float32 (`float32_modules(model, dtype)`)
) -> list:
    "Forward hooks making each module of `types` in `model` run in float32 inside CPU autocast; their handles"
    hs = []
    for m in model.modules():
        if types and isinstance(m, tuple(types)):
            f = Float32Forward()
            hs += [m.register_forward_pre_hook(f.pre, with_kwargs=True),
                   m.register_forward_hook(f.post, with_kwargs=True, always_call=True)]
    return hs

def model_device(learn) -> torch.device:
    "The device of the first parameter of `learn.model`, else that of `learn.dls`, else the CPU"
    p = next(iter(learn.model.parameters()), None)
    if p is not None: return p.device
    return torch.device(getattr(getattr(learn, 'dls', None), 'device', None) or 'cpu')
