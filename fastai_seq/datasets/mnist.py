"MNIST digits: idx/npz/png readers (`load_mnist_digits`, `load_mnist`) and the embedded offline digits"
from __future__ import annotations
import gzip, struct
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torch import Tensor
from ..core import SeqError, natural_key

__all__ = ['DigitsError', 'load_mnist_digits', 'load_mnist', 'embedded_digits']

class DigitsError(SeqError):
    "A digit source that cannot be read: the message names the file and lists the accepted formats"

_FORMATS = ("Accepted: MNIST idx image files ('train-images-idx3-ubyte', 't10k-images-idx3-ubyte', plain or .gz), "
            "an .npz/.npy holding (N,28,28) or (N,784) digits (keys x_train/x_test or a single array), "
            "or the png folders of fastai's MNIST sets ('training/<digit>/*.png', 'testing/<digit>/*.png' of URLs.MNIST; "
            "'train/<digit>', 'valid/<digit>' of URLs.MNIST_SAMPLE and URLs.MNIST_TINY), "
            "or a folder holding any of these.")

# ---------------------------------------------------------------------------------------------------------------- digits
def _read_bytes(fn:Path) -> bytes:
    "The content of `fn`, gunzipped when it starts with the gzip magic bytes"
    with open(fn, 'rb') as f: head = f.read(2)
    try:
        with (gzip.open if head==b'\x1f\x8b' else open)(fn, 'rb') as f: return f.read()
    except (OSError, EOFError) as e:
        raise DigitsError(f"{fn}: cannot read this file ({type(e).__name__}: {e}); it is corrupt or truncated, get it again.") from e

def _read_idx_images(fn:Path) -> np.ndarray:
    "Images `(N,rows,cols)` uint8 from an MNIST idx3 file, checking its magic number and size"
    b = _read_bytes(fn)
    if len(b)<16: raise DigitsError(f"{fn}: {len(b)} bytes, too short for an MNIST idx header. {_FORMATS}")
    magic,n,h,w = struct.unpack('>iiii', b[:16])
    if magic==2049: raise DigitsError(f"{fn}: an MNIST *labels* file (idx1, magic 0x00000801): pass the matching "
                                      "'*-images-idx3-ubyte' file instead.")
    if magic!=2051: raise DigitsError(f"{fn}: not an MNIST idx image file (magic number {magic & 0xffffffff:#010x}, expected "
                                      f"0x00000803). {_FORMATS}")
    if n<0 or h<=0 or w<=0 or len(b)!=16+n*h*w:
        raise DigitsError(f"{fn}: the header announces {n} images of {h}x{w} ({16+n*h*w} bytes) but the file holds {len(b)} "
                          "bytes: it is truncated or corrupt, get it again.")
    return np.frombuffer(b, np.uint8, offset=16).reshape(n, h, w).copy()

def as_digits(
    a, # Digit images: `(N,h,w)`, `(N,784)`, `(N,1,h,w)` or `(N,h,w,1)`; uint8 in [0,255], or floats in [0,1]
    src='digits', # What to name in errors: the file or array they came from
) -> np.ndarray:
    "Check and convert an array of digits to `(N,h,w)` uint8 (floats in [0,1] are scaled by 255)"
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a)
    if a.ndim==2 and a.shape[1]==784: a = a.reshape(-1, 28, 28)
    if a.ndim==4 and a.shape[-1]==1: a = a[..., 0]
    elif a.ndim==4 and a.shape[1]==1: a = a[:, 0]
    if a.ndim!=3 or 0 in a.shape: raise DigitsError(f"{src}: expected digits of shape (N,h,w), (N,784) or (N,1,h,w), got "
                                                  f"{a.shape}. {_FORMATS}")
    if a.dtype==np.uint8: return a
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype==bool):
        raise DigitsError(f"{src}: digits of dtype {a.dtype}; give uint8 in [0,255] or floats in [0,1].")
    lo,hi = float(a.min()), float(a.max())
    if lo<0 or hi>255: raise DigitsError(f"{src}: digit values span [{lo}, {hi}]; give uint8 in [0,255] or floats in [0,1].")
    if np.issubdtype(a.dtype, np.floating) and hi<=1: a = a*255
    return np.round(a).astype(np.uint8)

def _read_idx_labels(fn:Path) -> np.ndarray:
    "Labels `(N,)` int64 from an MNIST idx1 file, checking its magic number and size"
    b = _read_bytes(fn)
    if len(b)<8: raise DigitsError(f"{fn}: {len(b)} bytes, too short for an MNIST idx labels header.")
    magic,n = struct.unpack('>ii', b[:8])
    if magic!=2049: raise DigitsError(f"{fn}: not an MNIST idx labels file (magic number {magic & 0xffffffff:#010x}, expected "
                                      "0x00000801).")
    if n<0 or len(b)!=8+n: raise DigitsError(f"{fn}: the header announces {n} labels but the file holds {len(b)-8} bytes of them: "
                                             "it is truncated or corrupt, get it again.")
    return np.frombuffer(b, np.uint8, offset=8).astype(np.int64)

def _labels_file(fn:Path) -> Path:
    "The idx labels file beside the idx images file `fn` ('t10k-images-idx3-ubyte.gz' -> 't10k-labels-idx1-ubyte[.gz]')"
    stem = fn.name.removesuffix('.gz').replace('images-idx3', 'labels-idx1')
    for c in (fn.parent/stem, fn.parent/f'{stem}.gz'):
        if c.is_file(): return c
    raise DigitsError(f"{fn}: no labels file beside it ({stem} or {stem}.gz): put the matching labels file in {fn.parent}, "
                      "or use load_mnist_digits for the images alone.")

def _idx_pair(fn:Path, labels:bool):
    x = _read_idx_images(fn)
    if not labels: return x, None
    lf = _labels_file(fn)
    y = _read_idx_labels(lf)
    if len(y)!=len(x): raise DigitsError(f"{lf}: {len(y)} labels for the {len(x)} images of {fn}: use the matching pair of files.")
    return x, y

_LABEL_KEYS = {'x_train':'y_train', 'x_val':'y_val', 'x_valid':'y_valid', 'x_test':'y_test', 'images':'labels', 'digits':'labels',
               'x':'y', 'data':'labels'}

def _read_array_file(fn:Path, labels:bool=False):
    "Digits (and labels) from an `.npy` or `.npz` (keys x_train/x_val/x_test concatenated in that order, or a single array)"
    try: z = np.load(fn, allow_pickle=False)
    except Exception as e: raise DigitsError(f"{fn}: cannot load it with numpy ({type(e).__name__}: {e}). {_FORMATS}") from e
    if isinstance(z, np.ndarray):
        if labels: raise DigitsError(f"{fn}: a single array holds no labels; save an .npz with x_train/y_train (or x_test/y_test).")
        return as_digits(z, fn), None
    with z:
        keys = list(z.keys())
        xs = [k for k in ('x_train', 'x_val', 'x_valid', 'x_test') if k in keys]
        if not xs: xs = [k for k in ('images', 'digits', 'x', 'data') if k in keys][:1]
        if not xs and len(keys)==1: xs = keys
        if not xs: raise DigitsError(f"{fn}: cannot tell which of the arrays {keys} holds the digits; name it x_train/x_test "
                                     "or save a single array.")
        x = np.concatenate([as_digits(z[k], f'{fn}[{k!r}]') for k in xs])
        if not labels: return x, None
        missing = [_LABEL_KEYS.get(k, f'labels for {k}') for k in xs if _LABEL_KEYS.get(k) not in keys]
        if missing: raise DigitsError(f"{fn}: no labels {missing} for the digits {xs} (arrays: {keys}); save them beside the digits.")
        y = np.concatenate([np.asarray(z[_LABEL_KEYS[k]]).astype(np.int64).reshape(-1) for k in xs])
        if len(y)!=len(x): raise DigitsError(f"{fn}: {len(y)} labels for {len(x)} digits.")
        return x, y

def _is_idx_images(p:Path) -> bool: return p.is_file() and 'idx3-ubyte' in p.name and 'images' in p.name

_SPLIT_ORDER = ('training', 'train', 'valid', 'validation', 'val', 'testing', 'test')

def _png_roots(d:Path) -> list:
    "The folders of `d` laid out as `<digit>/*.png`: every split (training/train, valid, testing/test, then others by name), or `d`"
    def _has_digit_dirs(p): return p.is_dir() and any(s.is_dir() and s.name.isdigit() for s in p.iterdir())
    subs = [s for s in d.iterdir() if _has_digit_dirs(s)]
    roots = sorted(subs, key=lambda s: (_SPLIT_ORDER.index(s.name.lower()) if s.name.lower() in _SPLIT_ORDER else len(_SPLIT_ORDER),
                                        natural_key(s.name)))
    return roots or ([d] if _has_digit_dirs(d) else [])

def _read_png(fn): return np.asarray(Image.open(fn).convert('L'))

def _read_png_tree(roots:list, labels:bool=False):
    "All `<root>/<digit>/*.png` images, roots in order, digit folders and files in natural order, as `(N,h,w)` uint8 (and labels)"
    fns,ys = [],[]
    for r in roots:
        for s in sorted((s for s in r.iterdir() if s.is_dir() and s.name.isdigit()), key=lambda s: int(s.name)):
            fs = sorted(s.glob('*.png'), key=lambda f: natural_key(f.name))
            fns += fs; ys += [int(s.name)]*len(fs)
    if not fns: raise DigitsError(f"{roots[0]}: digit folders without png files. {_FORMATS}")
    with ThreadPoolExecutor(4) as ex: imgs = list(ex.map(_read_png, fns))
    shapes = {i.shape for i in imgs}
    if len(shapes)>1:
        bad = next(f for f,i in zip(fns, imgs) if i.shape!=imgs[0].shape)
        raise DigitsError(f"{bad}: {_read_png(bad).shape[::-1]} pixels while {fns[0]} has {imgs[0].shape[::-1]}: "
                          "all digit images must have one size.")
    return np.stack(imgs), (np.array(ys, dtype=np.int64) if labels else None)

def _load_mnist(path, labels:bool):
    "Digits and (when `labels`) their labels from any of the accepted sources"
    p = Path(path).expanduser()
    if not p.exists(): raise FileNotFoundError(f"{p}: no such file or folder. {_FORMATS}")
    if p.is_file():
        if p.suffix.lower() in ('.npz', '.npy'): return _read_array_file(p, labels)
        return _idx_pair(p, labels)
    idx = [f for f in p.iterdir() if _is_idx_images(f)]
    # one file per data set: a plain copy wins over its .gz twin; train before t10k/test
    byname = {}
    for f in sorted(idx, key=lambda f: f.name.endswith('.gz')): byname.setdefault(f.name.removesuffix('.gz'), f)
    if byname:
        pairs = [_idx_pair(f, labels) for _,f in sorted(byname.items(), key=lambda o: ('train' not in o[0], o[0]))]
        return np.concatenate([x for x,_ in pairs]), (np.concatenate([y for _,y in pairs]) if labels else None)
    arrs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in ('.npz', '.npy'))
    if len(arrs)==1: return _read_array_file(arrs[0], labels)
    if len(arrs)>1: raise DigitsError(f"{p}: several array files {[a.name for a in arrs]}; pass the one holding the digits.")
    roots = _png_roots(p)
    if roots: return _read_png_tree(roots, labels)
    raise DigitsError(f"{p}: no MNIST digits found in this folder. {_FORMATS}")

def load_mnist_digits(
    path:str|Path, # An idx(.gz) image file, an .npz/.npy, or a folder holding idx files, an .npz or fastai's MNIST png folders
) -> np.ndarray:
    "MNIST digits as an `(N,28,28)` uint8 array; a folder with several splits gives all of them, training first"
    return _load_mnist(path, labels=False)[0]

def load_mnist(
    path:str|Path, # As for `load_mnist_digits`; idx image files need their labels file beside them, an .npz its y_* arrays
) -> tuple:
    "MNIST `(digits, labels)`: `(N,28,28)` uint8 and `(N,)` int64, from idx files, an .npz or a png tree (labels = folder names)"
    return _load_mnist(path, labels=True)

@lru_cache(maxsize=1)
def _embedded_digits() -> np.ndarray:
    from sklearn.datasets import load_digits
    x = torch.from_numpy(load_digits().images.astype(np.float32)/16)[:, None]   # (1797,1,8,8), ink coverage in [0,1]
    u = torch.nn.functional.interpolate(x, size=(20,20), mode='bicubic', align_corners=False)[:, 0].numpy()
    u = np.clip((u-0.35)/0.4, 0, 1)   # sharpen the blurry upscaled strokes to MNIST-like saturated lines (mean ~37 vs 33.8)
    # centre each 20x20 digit by its centre of mass in a 28x28 field, as MNIST was made
    ys,xs = np.arange(20.)[None,:,None], np.arange(20.)[None,None,:]
    m = u.sum((1,2)).clip(1e-6)
    dy = np.clip(np.round(9.5-(u*ys).sum((1,2))/m), -4, 4).astype(int)
    dx = np.clip(np.round(9.5-(u*xs).sum((1,2))/m), -4, 4).astype(int)
    out = np.zeros((len(u), 28, 28), np.uint8)
    u8 = np.round(u*255).astype(np.uint8)
    for i in range(len(u)): out[i, 4+dy[i]:24+dy[i], 4+dx[i]:24+dx[i]] = u8[i]
    out.flags.writeable = False
    return out

def embedded_digits() -> np.ndarray:
    "scikit-learn's bundled handwritten digits (1797 8x8 images) upscaled to MNIST-like `(1797,28,28)` uint8: no download needed"
    # Bicubic upscaling to a 20x20 box, a contrast curve for saturated strokes, then centred by mass with a 4 px margin
    return _embedded_digits().copy()
