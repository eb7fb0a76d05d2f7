"Tests for fastai_seq.datasets: digit loading, embedded digits, the Moving MNIST generator and DataLoaders, motion videos"
import gzip, hashlib, math, struct, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from torch import nn
from PIL import Image
import av
from fastai.learner import Learner, load_learner
from fastai.losses import MSELossFlat
from fastai_seq.core import ImageSeq, SeqError
from fastai_seq.datasets import *
from fastai_seq.datasets.motion_videos import _motion_clips
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `learn.predict` with paths and `n_out`, `evaluate_clips`, ...)
from conftest import REPO

# ------------------------------------------------------------------------------------------------------------- helpers
def write_idx(fn, a:np.ndarray, gz:bool=False, magic:int=2051):
    "Write `a` `(N,h,w)` uint8 as an MNIST idx3 file"
    b = struct.pack('>iiii', magic, *a.shape) + a.astype(np.uint8).tobytes()
    Path(fn).write_bytes(gzip.compress(b) if gz else b)
    return Path(fn)

def rand_digits(n, seed=0, h=28, w=28):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w)).astype(np.uint8)

def bbox(frame):
    "(top, left, height, width) of the nonzero pixels of a 2-D frame"
    rs,cs = np.nonzero(frame.max(1))[0], np.nonzero(frame.max(0))[0]
    return rs[0], cs[0], rs[-1]-rs[0]+1, cs[-1]-cs[0]+1

def loop_paste(mm, params):
    "Reference renderer: per sequence, frame and digit, slice-max the digit at `mm.positions`"
    pos = mm.positions(params)
    n,T,K = pos.shape[:3]
    h,w = mm.digits.shape[1:]
    out = np.zeros((n, T, mm.size, mm.size), np.uint8)
    for i in range(n):
        for t in range(T):
            for k in range(K):
                j = params['idx'][i, k]
                if j<0: continue
                r,c = pos[i, t, k]
                out[i, t, r:r+h, c:c+w] = np.maximum(out[i, t, r:r+h, c:c+w], mm.digits[j])
    return out

# ----------------------------------------------------------------------------------------------------- load_mnist_digits
T10K_MEAN = 33.791224489795916   # mean pixel of the 10,000 t10k digits (the train set's is 33.318)

def test_load_mnist_t10k(data_dir):
    p = data_dir/'mnist'
    if not (p/'t10k-images-idx3-ubyte.gz').exists(): pytest.skip(f"{p}/t10k-images-idx3-ubyte.gz not found")
    d = load_mnist_digits(p)
    assert d.shape==(10000, 28, 28) and d.dtype==np.uint8
    assert d.mean()==pytest.approx(T10K_MEAN, abs=1e-6)
    assert d.min()==0 and d.max()==255
    f = load_mnist_digits(p/'t10k-images-idx3-ubyte.gz')   # the file itself, not the folder
    assert np.array_equal(d, f)
    # the labels file next to it is refused with a message naming it and saying what to pass
    with pytest.raises(DigitsError, match='labels.*images-idx3-ubyte'): load_mnist_digits(p/'t10k-labels-idx1-ubyte.gz')

def test_load_idx_folder_train_and_t10k(tmp_path):
    tr,te = rand_digits(5, 1), rand_digits(3, 2)
    write_idx(tmp_path/'t10k-images-idx3-ubyte.gz', te, gz=True)
    write_idx(tmp_path/'train-images-idx3-ubyte', tr)
    write_idx(tmp_path/'train-images-idx3-ubyte.gz', tr[:1], gz=True)   # a .gz twin of a plain file is ignored
    d = load_mnist_digits(tmp_path)
    assert np.array_equal(d, np.concatenate([tr, te]))   # all of them, train first
    assert np.array_equal(load_mnist_digits(tmp_path/'t10k-images-idx3-ubyte.gz'), te)
    # gzip is detected by content, not by name
    assert np.array_equal(load_mnist_digits(write_idx(tmp_path/'digits.bin', te, gz=True)), te)

def test_load_npz_and_npy(tmp_path):
    a,b = rand_digits(4, 3), rand_digits(2, 4)
    np.savez(tmp_path/'mnist.npz', x_train=a, y_train=np.arange(4), x_test=b, y_test=np.arange(2))
    assert np.array_equal(load_mnist_digits(tmp_path/'mnist.npz'), np.concatenate([a, b]))
    # a folder holding one .npz
    assert np.array_equal(load_mnist_digits(tmp_path), np.concatenate([a, b]))
    # a single float array in [0,1], flattened to (N,784)
    np.savez(tmp_path/'f.npz', a.reshape(4, 784)/255.)
    assert np.array_equal(load_mnist_digits(tmp_path/'f.npz'), a)
    np.save(tmp_path/'g.npy', a[:, None])   # (N,1,28,28)
    assert np.array_equal(load_mnist_digits(tmp_path/'g.npy'), a)
    np.savez(tmp_path/'bad.npz', foo=a, bar=b)
    with pytest.raises(DigitsError, match=r"bad\.npz.*\['foo', 'bar'\]"): load_mnist_digits(tmp_path/'bad.npz')
    np.save(tmp_path/'neg.npy', a.astype(np.int16)-300)
    with pytest.raises(DigitsError, match=r'neg\.npy.*span'): load_mnist_digits(tmp_path/'neg.npy')

def test_load_png_folders(tmp_path):
    "The layout of fastai's untar_data(URLs.MNIST): training/<digit>/*.png and testing/<digit>/*.png"
    tr,te = rand_digits(6, 5), rand_digits(4, 6)
    for split,arr in (('training', tr), ('testing', te)):
        for i,im in enumerate(arr):
            d = tmp_path/split/str(i%2); d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(d/f'{i}.png')
    d = load_mnist_digits(tmp_path)
    # training then testing; digit folders in numeric order; files in natural order within them
    order = lambda arr: np.concatenate([arr[0::2], arr[1::2]])
    assert np.array_equal(d, np.concatenate([order(tr), order(te)]))
    assert np.array_equal(load_mnist_digits(tmp_path/'testing'), order(te))
    Image.fromarray(rand_digits(1, 7, 20, 20)[0]).save(tmp_path/'testing'/'1'/'99.png')
    with pytest.raises(DigitsError, match=r'99\.png.*one size'): load_mnist_digits(tmp_path)

def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'): load_mnist_digits(tmp_path/'nope')
    (tmp_path/'junk.bin').write_bytes(b'\x00\x01\x02\x03' * 10)
    with pytest.raises(DigitsError, match=r'junk\.bin.*magic number.*Accepted'): load_mnist_digits(tmp_path/'junk.bin')
    (tmp_path/'tiny').write_bytes(b'\x00\x00')
    with pytest.raises(DigitsError, match='too short'): load_mnist_digits(tmp_path/'tiny')
    fn = write_idx(tmp_path/'cut-images-idx3-ubyte', rand_digits(3))
    fn.write_bytes(fn.read_bytes()[:-100])
    with pytest.raises(DigitsError, match=r'cut-images-idx3-ubyte.*3 images of 28x28.*truncated'): load_mnist_digits(fn)
    fn.write_bytes(b'\x1f\x8b' + b'garbage' * 5)
    with pytest.raises(DigitsError, match='corrupt'): load_mnist_digits(fn)
    (tmp_path/'empty').mkdir()
    with pytest.raises(DigitsError, match=r'empty: no MNIST digits.*Accepted'): load_mnist_digits(tmp_path/'empty')

def test_sequence_file_errors_are_their_own(tmp_path):
    "A Moving MNIST sequence file raises `MovingMNISTError` naming it and the fix; `except DigitsError` still catches it"
    import fastai_seq.all as fa
    assert fa.MovingMNISTError is MovingMNISTError and issubclass(MovingMNISTError, SeqError)
    for name, a, pat in (('f.npy', np.zeros((20, 2, 64, 64), np.float32), r'f\.npy: dtype float32, expected uint8.*to_npy'),
                         ('c.npy', np.zeros((20, 2, 1, 64, 64), np.uint8), r'c\.npy: shape .* has a channel axis.*squeeze'),
                         ('s.npy', np.zeros((20, 64, 64), np.uint8), r's\.npy: an array of shape \(20, 64, 64\)')):
        np.save(tmp_path/name, a)
        with pytest.raises(MovingMNISTError, match=pat): load_moving_mnist(tmp_path/name)
        with pytest.raises(DigitsError): load_moving_mnist(tmp_path/name)  # code written when these were `DigitsError`s
    (tmp_path/'j.npy').write_bytes(b'junk')
    with pytest.raises(MovingMNISTError, match=r'j\.npy: cannot load it with numpy'): MovingMNISTFile(tmp_path/'j.npy')
    np.savez(tmp_path/'z.npz', a=np.zeros(3))
    with pytest.raises(MovingMNISTError, match=r'z\.npz: an \.npz archive'): load_moving_mnist(tmp_path/'z.npz')
    with pytest.raises(DigitsError) as e: load_mnist_digits(tmp_path/'j.npy')  # digit files: `DigitsError`, never the other
    assert not isinstance(e.value, MovingMNISTError)

def test_helpers_shared_by_the_dataset_files_are_public():
    "`as_digits` and `paste_digits` are plain public names of the file whose job they are (not exported)"
    from fastai_seq.datasets import mnist, moving_mnist, motion_videos
    assert motion_videos.as_digits is mnist.as_digits and motion_videos.paste_digits is moving_mnist.paste_digits
    assert 'as_digits' not in mnist.__all__ and 'paste_digits' not in moving_mnist.__all__
    d = mnist.as_digits(np.ones((2, 1, 4, 4)))
    assert d.dtype == np.uint8 and d.shape == (2, 4, 4) and (d == 255).all()

# ------------------------------------------------------------------------------------------------------ embedded digits
def test_embedded_digits():
    d = embedded_digits()
    assert d.shape==(1797, 28, 28) and d.dtype==np.uint8
    assert d.min()==0 and d.max()==255
    assert 30<d.mean()<45   # MNIST's is 33.3-33.8
    # a 4 px empty margin on average; each digit centred by its centre of mass, like MNIST
    assert (d[:, [0, 27]].max((1, 2))==0).all() and (d[:, :, [0, 27]].max((1, 2))==0).all()
    m = d.sum((1, 2), dtype=float)
    cy = (d*np.arange(28.)[None, :, None]).sum((1, 2))/m
    cx = (d*np.arange(28.)[None, None, :]).sum((1, 2))/m
    assert np.abs(cy-13.5).max()<=0.75 and np.abs(cx-13.5).max()<=0.75
    # smooth upscaling: intermediate gray levels exist on the stroke edges
    assert ((d>0) & (d<255)).mean()>0.03
    d[0] = 0   # a copy each call: changing it changes nothing
    assert embedded_digits()[0].max()==255

# ------------------------------------------------------------------------------------------------------------ generator
def test_generate_shapes_and_seed():
    mm = MovingMNIST()
    a = mm.generate(6, 0)
    assert a.shape==(6, 20, 64, 64) and a.dtype==np.uint8
    assert np.array_equal(a, mm.generate(6, 0)) and not np.array_equal(a, mm.generate(6, 1))
    # two embedded digits (mean ~37 over 28x28) in 64x64, minus overlaps
    assert 8<a.mean()<16
    b = MovingMNIST(n_in=3, n_out=2, size=48).generate(4, 0)
    assert b.shape==(4, 5, 48, 48)

@pytest.mark.parametrize('n_digits,size', [(2, 64), ([0, 1, 3], 64), (1, 40)])
def test_vectorised_matches_loop(n_digits, size):
    "The strided renderer gives the bytes of a plain per-frame slice-max loop"
    mm = MovingMNIST(n_digits=n_digits, size=size, n_in=7, n_out=6)
    p = mm.sample(45, 3)   # 45: more than one block of sequences, and a partial one
    assert np.array_equal(mm.render(p), loop_paste(mm, p))

def test_bounce_inside_and_speed():
    "Track a solid digit: it stays inside, moves by `speed`, and reflects off the edges"
    L,speed = 64-28, 3.6
    mm = MovingMNIST(digits=np.full((1, 28, 28), 255, np.uint8), n_in=30, n_out=30, n_digits=1, speed=speed)
    assert mm.speed==speed and MovingMNIST().speed==pytest.approx(3.6)   # the default: a tenth of the travel, as the original
    p = mm.sample(40, 7)
    fr = mm.render(p)
    boxes = np.array([[bbox(f) for f in s] for s in fr])   # (n,T,4)
    assert (boxes[..., 2:]==28).all()   # fully inside: never clipped
    # an independent simulation: step by the velocity, reflecting position and velocity at 0 and L
    sim = np.zeros((40, 60, 2))
    for i in range(40):
        y,v = p['pos'][i, 0].copy(), p['vel'][i, 0].copy()
        for t in range(60):
            sim[i, t] = y
            y = y+v
            for a in range(2):
                if y[a]<0: y[a],v[a] = -y[a], -v[a]
                if y[a]>L: y[a],v[a] = 2*L-y[a], -v[a]
    exact = np.abs(sim-np.floor(sim)-0.5)>1e-6   # where rounding cannot flip on floating-point error
    assert np.array_equal(boxes[..., :2][exact], np.floor(sim+0.5)[exact])
    assert np.abs(boxes[..., :2]-np.floor(sim+0.5)).max()<=1
    # speed: away from the edges the digit moves by the set speed; over the whole path it bounces many times
    d = np.diff(boxes[..., :2].astype(float), axis=1)
    vel_sign = np.sign(np.diff(sim, axis=1))
    free = (vel_sign[:, 1:]==vel_sign[:, :-1]).all(-1)   # no reversal around this step
    step = np.hypot(*np.moveaxis(d[:, 1:][free], -1, 0))
    assert step.mean()==pytest.approx(speed, abs=0.15)
    rev = (np.sign(d[:, 1:])*np.sign(d[:, :-1])<0).sum()
    assert rev>40*2
    assert boxes[..., :2].min()==0 and boxes[..., :2].max()==L   # it reaches both edges

def test_overlap_is_max():
    mm = MovingMNIST(digits=np.stack([np.full((28, 28), 100), np.full((28, 28), 200)]).astype(np.uint8), n_in=1, n_out=1)
    for idx in ([[0, 1]], [[1, 0]]):
        p = dict(idx=np.array(idx), pos=np.array([[[10., 10.], [20., 20.]]]), vel=np.zeros((1, 2, 2)))
        f = mm.render(p)[0, 0]   # either order: the brighter digit wins where they overlap (a sum would wrap to 44)
        assert (f==200).sum()==784 and (f==100).sum()==784-18*18 and set(np.unique(f))=={0, 100, 200}

def test_n_digits_list_and_errors():
    mm = MovingMNIST(digits=np.full((1, 28, 28), 255, np.uint8), n_digits=[1, 2, 3])
    p = mm.sample(300, 0)
    count = (p['idx']>=0).sum(1)
    assert set(count)=={1, 2, 3}
    fr = mm.render(p)
    assert ((fr[count==1]>0).sum((2, 3))==784).all()
    assert ((fr[count==3]>0).sum((2, 3))>=784).all()
    with pytest.raises(ValueError, match='do not fit'): MovingMNIST(size=20)
    with pytest.raises(ValueError, match='n_digits'): MovingMNIST(n_digits=[0])
    with pytest.raises(ValueError, match='seed'): MovingMNIST(seed=-1)

def test_sequence_access_is_order_free():
    mm = MovingMNIST(n_in=2, n_out=2, chunk=8)
    v = mm.valid_set(20)
    assert np.array_equal(np.stack([mm.sequence(i) for i in (19, 3, 11, 0)]), v[[19, 3, 11, 0]])
    t1 = mm.sequence(5, valid=False).copy()
    mm.next_epoch()
    assert not np.array_equal(mm.sequence(5, valid=False), t1)
    assert np.array_equal(mm.sequence(5), v[5])

# ---------------------------------------------------------------------------------------------------------- DataLoaders
N_IN,N_OUT,SIZE,BS = 4, 3, 48, 6
def small_dls(seed=0, **kwargs): return moving_mnist_dls(n_in=N_IN, n_out=N_OUT, n_train=24, n_valid=12, bs=BS, size=SIZE, seed=seed, **kwargs)

@pytest.fixture(scope='module')
def dls(): return small_dls()

def test_dls_batches(dls):
    x,y = dls.one_batch()
    assert type(x) is ImageSeq and type(y) is ImageSeq
    assert x.shape==(BS, N_IN, 1, SIZE, SIZE) and y.shape==(BS, N_OUT, 1, SIZE, SIZE)
    assert x.dtype==torch.float32 and x.min()==0 and x.max()==1 and 0<y.mean()<0.2
    assert len(dls.train)==4 and len(dls.valid)==2
    assert dls.n_in==N_IN and dls.n_out==N_OUT
    # validation batches are the generator's validation sequences, inputs then the frames after them
    v = torch.cat([torch.cat([a, b], 1) for a,b in dls.valid])
    ref = dls.train.dataset.tls[0].tfms.fs[0].mm.valid_set(12)
    assert torch.equal((v[:, :, 0]*255).round().byte(), torch.from_numpy(ref))

def valid_bytes(dls) -> bytes:
    return b''.join((torch.cat([x, y], 1)*255).round().byte().numpy().tobytes() for x,y in dls.valid)

def test_valid_fixed_train_fresh(dls):
    v1,v2 = valid_bytes(dls), valid_bytes(dls)
    assert v1==v2
    t1 = torch.cat([x for x,_ in dls.train])
    t2 = torch.cat([x for x,_ in dls.train])
    assert t1.shape==t2.shape==(24, N_IN, 1, SIZE, SIZE)
    assert not torch.equal(t1, t2)   # a fresh training set each epoch
    assert (t1-t2).abs().mean()>0.05
    # and training sequences are not validation ones
    assert valid_bytes(dls)==v1

def test_shuffled_reading(dls):
    "Shuffled loaders read the same validation sequences, in another order"
    key = lambda b: sorted(hashlib.md5(o.numpy().tobytes()).hexdigest() for o in torch.cat([b_[0] for b_ in b]))
    ordered = list(dls.valid)
    shuffled = list(dls.valid.new(shuffle=True))
    assert key(shuffled)==key(ordered)
    assert not torch.equal(torch.cat([b[0] for b in shuffled]), torch.cat([b[0] for b in ordered]))

def test_valid_identical_across_processes(dls):
    code = ("import hashlib, torch\nfrom fastai_seq.datasets import moving_mnist_dls\n"
            f"dls = moving_mnist_dls(n_in={N_IN}, n_out={N_OUT}, n_train=24, n_valid=12, bs={BS}, size={SIZE}, seed=0)\n"
            "b = b''.join((torch.cat([x, y], 1)*255).round().byte().numpy().tobytes() for x,y in dls.valid)\n"
            "print(hashlib.md5(b).hexdigest())")
    r = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode==0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1]==hashlib.md5(valid_bytes(dls)).hexdigest()
    assert valid_bytes(small_dls(seed=1))!=valid_bytes(dls)

def test_show_batch(dls):
    import matplotlib.pyplot as plt
    dls.show_batch(max_n=2)
    fig = plt.gcf()
    imgs = [a for a in fig.axes if a.images]
    assert len(imgs)==4   # 2 samples x (input strip, target strip)
    a = imgs[0].images[0].get_array()
    assert np.asarray(a).max()>0

def tiny_model():
    "(B,n_in,1,H,W) -> (B,n_out,1,H,W): time as the channels of a 3-D conv with a depth of one frame"
    return nn.Sequential(nn.Conv3d(N_IN, 4, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
                         nn.Conv3d(4, N_OUT, (1, 3, 3), padding=(0, 1, 1)), nn.Sigmoid())

def test_learner_fit_export_predict(dls, tmp_path):
    torch.manual_seed(0)
    learn = Learner(small_dls(), tiny_model(), loss_func=MSELossFlat(), path=tmp_path)
    learn.fit(2, 1e-2)
    losses = [float(l) for l in learn.recorder.values[-1][:2]]
    assert all(math.isfinite(l) for l in losses) and losses[1]<0.3
    learn.export('model.pkl')
    fn = tmp_path/'model.pkl'
    assert fn.stat().st_size<1_000_000   # no digits, no sequences in the export
    learn2 = load_learner(fn)
    seq = learn.dls.train.dataset.tls[0].tfms.fs[0].mm.valid_set(1)[0]
    item = ImageSeq(torch.from_numpy(seq[:N_IN, None]))   # uint8 (n_in,1,H,W)
    assert learn2.dls.n_in==N_IN and learn2.dls.n_out==N_OUT
    b = learn2.dls.test_dl([item]).one_batch()[0]
    assert b.shape==(1, N_IN, 1, SIZE, SIZE) and b.dtype==torch.float32
    assert torch.equal(b[0], item.float()/255)
    dec,pred,raw = learn2.predict(item)
    assert pred.shape==(N_OUT, 1, SIZE, SIZE) and dec.shape==(N_OUT, 1, SIZE, SIZE)
    assert 0<=float(pred.min()) and float(pred.max())<=1
    # float input in [0,1] gives the same prediction; the original learner agrees with the loaded one
    assert torch.allclose(learn2.predict(ImageSeq(item.float()/255))[1], pred)
    assert torch.allclose(learn.predict(item)[1].cpu(), pred, atol=1e-6)
    with pytest.raises(SeqError, match=r'\(4,1,H,W\)'): learn2.predict(ImageSeq(torch.zeros(N_IN+1, 1, SIZE, SIZE)))
    with pytest.raises(SeqError, match='divide by 255'): learn2.predict(ImageSeq(torch.full((N_IN, 1, SIZE, SIZE), 3.)))

# -------------------------------------------------------------------------------------------------------- motion videos
def decode(fn) -> np.ndarray:
    with av.open(str(fn)) as c: return np.stack([f.to_ndarray(format='gray') for f in c.decode(video=0)])

def centroids(frames, thresh=100):
    m = frames>thresh
    ys,xs = np.mgrid[:frames.shape[1], :frames.shape[2]]
    n = m.sum((1, 2))
    return np.stack([(m*ys).sum((1, 2))/n, (m*xs).sum((1, 2))/n], -1)

NPC,NF = 12, 12
@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    return make_moving_videos(tmp_path_factory.mktemp('motion'), n_per_class=NPC, n_frames=NF, seed=0)

def test_videos_files(videos):
    classes = ['left', 'right', 'up', 'down']
    assert sorted(p.name for p in videos.iterdir())==sorted(classes)
    for c in classes:
        fs = sorted((videos/c).iterdir())
        assert [f.name for f in fs]==sorted(f'{c}_{i}.mp4' for i in range(NPC))
        with av.open(str(fs[0])) as ct:
            s = ct.streams.video[0]
            assert s.codec_context.name=='h264' and (s.width, s.height)==(64, 64)
        assert decode(fs[0]).shape==(NF, 64, 64)
    # decoded frames look like the source frames
    src = _motion_clips(NPC, NF, 64, classes, None, (0.5, 1.0), 10., 'class', 4, 0)
    for i in (0, NPC*3+5):
        c,name = classes[src['cls'][i]], src['names'][i]
        d = decode(videos/c/f'{name}.mp4').astype(float)
        psnr = 10*np.log10(255**2/((d-src['frames'][i])**2).mean())
        assert psnr>34

def test_videos_directions(videos):
    for c,(dy,dx) in {'left': (0, -1), 'right': (0, 1), 'up': (-1, 0), 'down': (1, 0)}.items():
        cen = np.stack([centroids(decode(f)) for f in sorted((videos/c).iterdir())])   # (NPC,NF,2)
        move = cen[:, -1]-cen[:, 0]   # from first to last frame
        along,across = (move[:, 1]*dx, move[:, 0]) if dx else (move[:, 0]*dy, move[:, 1])
        assert (along>0.5*(NF-1)*0.8).all() and (np.abs(across)<1).all()   # at least 0.5 px a frame, straight
        assert (np.abs(np.diff(cen[..., 1 if dx else 0], axis=1)).max()<2.5)   # steady: no jumps or wrap-arounds

def test_videos_single_frame_does_not_tell(tmp_path):
    "The position in one frame is no class cue: pooled over frames the classes coincide; first frames overlap widely"
    classes = ['left', 'right', 'up', 'down']
    src = _motion_clips(60, 16, 64, classes, None, (0.5, 1.0), 10., 'class', 4, 1)
    cen = np.stack([centroids(f) for f in src['frames']])   # (240,16,2), from the frames written to the files
    c = src['cls']
    # the ink never leaves the frame: without noise, the same number of pixels above the background in every frame
    ink = (_motion_clips(60, 16, 64, classes, None, (0.5, 1.0), 0., 'class', 4, 1)['frames']>30).sum((2, 3))
    assert (ink.max(1)==ink.min(1)).all() and ink.min()>20
    pooled = np.stack([cen[c==k].reshape(-1, 2).mean(0) for k in range(4)])
    assert np.ptp(pooled, 0).max()<3
    bins = np.linspace(0, 64, 9)
    for a,b,ax in ((0, 1, 1), (2, 3, 0)):   # opposite directions, along their axis of motion
        ha,hb = [np.histogram(cen[c==k][:, 0, ax], bins)[0]/60 for k in (a, b)]
        assert np.minimum(ha, hb).sum()>0.4   # histogram intersection of first-frame positions
        # while the motion itself separates them completely
        assert (cen[c==a][:, -1, ax]<cen[c==a][:, 0, ax]-5).all() and (cen[c==b][:, -1, ax]>cen[c==b][:, 0, ax]+5).all()

def test_videos_deterministic_codecs_names(videos, tmp_path):
    again = make_moving_videos(tmp_path/'again', n_per_class=NPC, n_frames=NF, seed=0)
    for f in sorted(videos.rglob('*.mp4'))[::5]:
        assert (again/f.relative_to(videos)).read_bytes()==f.read_bytes()
    other = make_moving_videos(tmp_path/'other', n_per_class=2, n_frames=NF, seed=1, classes=('left',))
    assert (other/'left'/'left_0.mp4').read_bytes()!=(videos/'left'/'left_0.mp4').read_bytes()
    ucf = make_moving_videos(tmp_path/'ucf', n_per_class=6, n_frames=8, classes=('up_left', 'down'), codec='mpeg4',
                             ext='.avi', names='ucf', clips_per_group=3)
    assert sorted(p.name for p in (ucf/'up_left').iterdir())==[f'v_UpLeft_g{g:02d}_c{c:02d}.avi' for g in (1, 2) for c in (1, 2, 3)]
    with av.open(str(ucf/'down'/'v_Down_g02_c03.avi')) as c: assert c.streams.video[0].codec_context.name=='mpeg4'
    assert decode(ucf/'down'/'v_Down_g02_c03.avi').shape==(8, 64, 64)
    src = _motion_clips(6, 8, 64, ['up_left', 'down'], None, (0.5, 1.0), 10., 'ucf', 3, 0)
    assert (src['idx'].reshape(2, 2, 3)==src['idx'].reshape(2, 2, 3)[..., :1]).all()   # a group shares its digit

def test_videos_errors(tmp_path):
    with pytest.raises(ValueError, match="codec 'nonexistent'.*no video encoder"):
        make_moving_videos(tmp_path, codec='nonexistent')
    with pytest.raises(ValueError, match='even'): make_moving_videos(tmp_path, size=63)
    with pytest.raises(ValueError, match='travels'): make_moving_videos(tmp_path, speed=(1, 4))
    with pytest.raises(ValueError, match='Unknown motion'): make_moving_videos(tmp_path, classes=('left', 'sideways'))
    with pytest.raises(ValueError, match=r"\.webm.*may not take this codec"):
        make_moving_videos(tmp_path, n_per_class=1, classes=('left',), codec='mpeg4', ext='.webm')
    assert not list(tmp_path.rglob('*.mp4'))
