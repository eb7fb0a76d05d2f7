import os
os.environ.setdefault('MPLBACKEND', 'Agg')
from pathlib import Path
import pytest
import matplotlib
matplotlib.use('Agg')

REPO = Path(__file__).resolve().parents[1]

def shared_data() -> Path|None:
    "The shared test data folder: `FASTAI_SEQ_TEST_DATA`, else `../shared/data` beside the repo"
    p = Path(os.environ.get('FASTAI_SEQ_TEST_DATA', REPO.parent/'shared'/'data'))
    return p if p.is_dir() else None

START_METHOD = os.environ.get('FASTAI_SEQ_TEST_START_METHOD') or None  # fork, forkserver or spawn; unset: Python's default

def pytest_configure(config):
    config.addinivalue_line('markers', 'workers: uses DataLoader worker processes (`FASTAI_SEQ_TEST_START_METHOD` picks how they start)')
    import multiprocessing
    if START_METHOD is not None and START_METHOD not in multiprocessing.get_all_start_methods():
        raise pytest.UsageError(f"FASTAI_SEQ_TEST_START_METHOD={START_METHOD!r}: use one of {multiprocessing.get_all_start_methods()}")

@pytest.fixture(scope='session', autouse=True)
def _start_method():
    "Start worker processes (DataLoader workers, pools) by `FASTAI_SEQ_TEST_START_METHOD` in this session, then restore"
    if START_METHOD is None:
        yield; return
    import multiprocessing
    old = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(START_METHOD, force=True)
    # the fork server imports torch, fastai and fastai_seq once, not every worker every epoch (README: workers)
    if START_METHOD=='forkserver': multiprocessing.set_forkserver_preload(['fastai_seq.all'])
    try: yield
    finally: multiprocessing.set_start_method(old, force=True)

@pytest.fixture(scope='session')
def data_dir() -> Path:
    p = shared_data()
    if p is None: pytest.skip("shared test data not found: set FASTAI_SEQ_TEST_DATA or put it at ../shared/data")
    return p

@pytest.fixture(scope='session')
def video_dir(data_dir) -> Path:
    p = data_dir/'videos'
    if not p.is_dir(): pytest.skip(f"{p} not found")
    return p

@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close('all')

@pytest.fixture(scope='module')
def one_thread():
    "Tiny models on a busy 2-core machine: one torch thread (restored after); a second one slows them, the video models ~20x"
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try: yield
    finally: torch.set_num_threads(n)

@pytest.fixture(autouse=True)
def _global_torch_state():
    "A test that fails (or leaks) must not change later tests: restore CPU autocast, torch threads and the default dtype"
    import torch
    state = torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'), torch.get_num_threads(), torch.get_default_dtype()
    yield
    now = torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'), torch.get_num_threads(), torch.get_default_dtype()
    if now!=state:
        torch.set_autocast_enabled('cpu', state[0]); torch.set_autocast_dtype('cpu', state[1])
        torch.set_num_threads(state[2]); torch.set_default_dtype(state[3])
        if now[:2]!=state[:2]:
            torch.clear_autocast_cache()
            pytest.fail(f"the test left CPU autocast at {now[:2]} (it was {state[:2]}): restored for the tests after it")

def make_frames(n:int, h:int=32, w:int=48, seed:int=0):
    "`n` RGB uint8 frames whose mean brightness encodes the frame index (frame i is about 8*i+20), with a little texture"
    import numpy as np
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 6, (h, w, 3))
    return np.stack([np.clip(8*i+20+tex, 0, 255).astype(np.uint8) for i in range(n)])

def frame_index(frame) -> int:
    "Recover the index written by `make_frames` from a decoded frame (uint8 HWC or CHW, or float in [0,1])"
    import numpy as np, torch
    a = frame.float() if isinstance(frame, torch.Tensor) else np.asarray(frame, dtype=np.float32)
    m = float(a.mean())
    if m<=1.5: m *= 255
    return int(round((m-22.5)/8))

def write_video(fn, frames, fps:int=10, codec:str='libx264', gop:int=None):
    "Write uint8 `(T,H,W,3)` frames to `fn` with PyAV (near-lossless H.264 by default) and return `fn`"
    import av
    fn = Path(fn); fn.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(fn), 'w') as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
        if codec=='libx264': s.options = {'crf': '1', **({'g': str(gop)} if gop else {})}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return fn

@pytest.fixture(scope='session')
def video_folder(tmp_path_factory):
    "A folder-per-class set of small H.264 videos (train/valid by grandparent) with frame indices in their brightness"
    root = tmp_path_factory.mktemp('videos')
    for split,n in (('train', 3), ('valid', 2)):
        for cls in ('a', 'b'):
            for i in range(n): write_video(root/split/cls/f'{cls}_{i}.mp4', make_frames(12 + 3*i + (cls=='b'), seed=i))
    return root

@pytest.fixture(scope='session')
def frame_folder(tmp_path_factory):
    "A folder-per-class set of frame folders (`1.png ... 10.png`, natural order) with frame indices in their brightness"
    from PIL import Image
    root = tmp_path_factory.mktemp('frames')
    for split,n in (('train', 3), ('valid', 2)):
        for cls in ('a', 'b'):
            for i in range(n):
                d = root/split/cls/f'{cls}_{i}'; d.mkdir(parents=True)
                for j,f in enumerate(make_frames(10, seed=i)): Image.fromarray(f).save(d/f'{j+1}.png')
    return root
