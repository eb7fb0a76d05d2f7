"Bad input: every case gives an error naming the file or works, with 0 and 2 DataLoader workers; `on_error='skip'` completes epochs"
import gc, os, re, shutil, struct, warnings, zlib
from fractions import Fraction
from pathlib import Path
import numpy as np, torch, pytest, av
from PIL import Image
from torch import nn
from fastai.vision.all import (DataBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize, Learner, ToTensor,
                               CrossEntropyLossFlat, TensorBase, set_seed)
from fastai_seq.core import ImageSeq, ImageSeqBW, SeqError
from fastai_seq.data import *
from fastai_seq.video import VideoError
from fastai_seq.files import get_video_files, videos_to_frames
import fastai_seq.data as fsd, fastai_seq.video as fsv
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `Path.ls_sorted`, `learn.predict` with paths, ...)
from conftest import make_frames, frame_index, write_video, shared_data

NW = [0, pytest.param(2, marks=pytest.mark.workers)]

@pytest.fixture(autouse=True, scope='module')
def _fast_worker_shutdown():
    "When a DataLoader iterator whose worker raised is freed, torch joins each worker for MP_STATUS_CHECK_INTERVAL (5 s): shorten it"
    import torch.utils.data._utils as tu
    old, tu.MP_STATUS_CHECK_INTERVAL = tu.MP_STATUS_CHECK_INTERVAL, 0.2
    yield
    tu.MP_STATUS_CHECK_INTERVAL = old

# ---- writers of bad files ----
def write_audio_only(fn):
    "An .mp4 holding one AAC audio stream and no video"
    with av.open(str(fn), 'w') as c:
        s = c.add_stream('aac', rate=16000)
        for i in range(8):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
            f.sample_rate, f.pts = 16000, i*1024
            for p in s.encode(f): c.mux(p)
        for p in s.encode(None): c.mux(p)
    return fn

def write_size_change(fn, sizes=((48, 32), (32, 24)), n=5):
    "A Matroska H.264 stream whose frame size changes mid-stream: two encoders muxed into one stream, in-band SPS"
    with av.open(str(fn), 'w') as c:
        s = c.add_stream('libx264', rate=10)
        s.width, s.height, s.pix_fmt = *sizes[0], 'yuv420p'
        pts = 0
        for w,h in sizes:
            e = av.CodecContext.create('libx264', 'w')
            e.width, e.height, e.pix_fmt, e.framerate, e.time_base = w, h, 'yuv420p', 10, Fraction(1, 10)
            for f in make_frames(n, h, w):
                vf = av.VideoFrame.from_ndarray(f, format='rgb24'); vf.pts = pts; pts += 1
                for p in e.encode(vf): p.stream = s; c.mux(p)
            for p in e.encode(None): p.stream = s; c.mux(p)
    return fn

def write_faststart(fn, n=30):
    "An H.264 .mp4 with its index (moov) before the data, as web videos are: cut short, its header still reads"
    with av.open(str(fn), 'w', options={'movflags': 'faststart'}) as c:
        s = c.add_stream('libx264', rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, 'yuv420p'
        for f in make_frames(n):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return fn

def write_png_header(fn, w, h):
    "A PNG that declares `w`x`h` grey pixels but holds a few bytes of data: only a header check can refuse it cheaply"
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t+d) & 0xffffffff)
    data = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
    Path(fn).write_bytes(data + chunk(b'IDAT', zlib.compress(b'\x00'*64)) + chunk(b'IEND', b''))
    return fn

def _bytes_path(d:Path, name:bytes) -> Path:
    "A path under `d` whose last part holds non-UTF-8 bytes (surrogate-escaped in `str`, as Python gives it on Linux)"
    return Path(os.fsdecode(os.fsencode(str(d)) + b'/' + name))

# ---- data ----
@pytest.fixture(scope='module')
def root(tmp_path_factory): return tmp_path_factory.mktemp('bad')

@pytest.fixture(scope='module')
def bad_videos(root, video_folder):
    "Broken video files, by case"
    d = root/'badvids'; d.mkdir()
    good = sorted(video_folder.glob('train/a/*.mp4'))[-1].read_bytes()
    (d/'zero.mp4').write_bytes(b'')
    (d/'truncated.mp4').write_bytes(good[:len(good)//3])
    (d/'text.mp4').write_text('this is not a video\n'*50)
    fs = write_faststart(d/'faststart.mp4').read_bytes()
    (d/'truncated_faststart.mp4').write_bytes(fs[:len(fs)//2])
    res = dict(zero=(d/'zero.mp4', r'empty|0 bytes'), truncated=(d/'truncated.mp4', r'truncated|corrupt|cannot|moov'),
               truncated_faststart=(d/'truncated_faststart.mp4', r'truncated|corrupt|decoding failed'),
               text=(d/'text.mp4', r'cannot open|not a video'), audio=(write_audio_only(d/'audio.mp4'), 'no video stream'),
               sizes=(write_size_change(d/'sizes.mkv'), 'frame size changes'))
    real = shared_data()
    if real is not None and (real/'videos'/'v_YoYo_g01_c01.avi').exists():  # a real XviD AVI cut short: its index is lost
        b = (real/'videos'/'v_YoYo_g01_c01.avi').read_bytes()
        (d/'v_YoYo_truncated.avi').write_bytes(b[:len(b)//3])
        res['truncated_avi'] = (d/'v_YoYo_truncated.avi', r'truncated|corrupt|cannot')
    return res

def _video_dls(path, nw=0, bs=2, **kw):
    kw = {'n_frames': 8, **kw}
    dblock = DataBlock(blocks=(VideoBlock(**kw), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                       splitter=GrandparentSplitter(), item_tfms=Resize(16))
    return dblock.dataloaders(path, bs=bs, num_workers=nw)

@pytest.fixture(scope='module')
def vdls(video_folder): return _video_dls(video_folder)

def _loader(dls) -> LoadFrames:
    "The `LoadFrames` transform of `dls` (shared by its train, valid and test loaders)"
    return dls.valid.dataset.tls[0].tfms.fs.filter(lambda f: isinstance(f, LoadFrames))[0]

def _batches(dls, items, nw):
    "All batches of a test loader over `items` (loaded by workers when `nw`>0)"
    return list(dls.test_dl(items, num_workers=nw, bs=len(items)))

def _raises(dls, item, nw, pat):
    "Loading `item` gives a `SeqError`/`VideoError` naming it and matching `pat`"
    with pytest.raises(ValueError) as e: _batches(dls, [item], nw)
    msg = str(e.value)
    assert isinstance(e.value, (SeqError, VideoError)), repr(e.value)
    assert str(item) in msg or os.path.basename(item) in msg, msg
    assert re.search(pat, msg), msg
    del e; gc.collect()  # shut the failed iterator's workers down now
    return msg

# ---- videos ----
@pytest.mark.parametrize('nw', NW)
def test_broken_videos_name_the_file(vdls, bad_videos, nw):
    for case,(fn,pat) in bad_videos.items(): _raises(vdls, fn, nw, pat)

def test_size_change_file_really_changes_size(bad_videos):
    with av.open(str(bad_videos['sizes'][0])) as c: sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert sizes == [(48, 32)]*5 + [(32, 24)]*5

@pytest.fixture(scope='module')
def short_video(root): return write_video(root/'short'/'a'/'three.mp4', make_frames(3))

@pytest.mark.parametrize('nw', NW)
def test_short_clip_policies(video_folder, short_video, nw):
    for short, expected in (('loop', [0, 1, 2, 0, 1, 2]), ('pad', [0, 1, 2, 2, 2, 2])):
        dls = _video_dls(video_folder, n_frames=6, short=short)
        x, = _batches(dls, [short_video], nw)[0]
        assert x.shape == (1, 6, 3, 16, 16) and [frame_index(f) for f in x[0]] == expected
    dls = _video_dls(video_folder, n_frames=6, short='error')
    _raises(dls, short_video, nw, r'has 3 frames.*n_frames=6')

@pytest.mark.parametrize('nw', NW)
def test_huge_declared_resolution_refused_before_decoding(video_folder, root, monkeypatch, nw):
    big = write_video(root/f'big{nw}'/'a'/'big.mp4', make_frames(3, 64, 80))  # 5120 pixels per frame
    dls = _video_dls(video_folder, max_pixels=48*32)  # the fixture videos are 48x32: just within the limit
    def no_decode(*a, **k): raise AssertionError('decoded a video above max_pixels')
    # every decode in video.py sets the decoder threads first; the header check comes before
    monkeypatch.setattr(fsv, '_set_threads', no_decode); monkeypatch.setattr(fsd, 'read_frames', no_decode)
    msg = _raises(dls, big, nw, r'80x64 = 5,120 pixels.*max_pixels=1,536')
    assert 'max_pixels' in msg and 'remove' in msg
    monkeypatch.undo()
    x, = _batches(_video_dls(video_folder, max_pixels=None), [big], nw)[0]  # no limit: it loads
    assert x.shape == (1, 8, 3, 16, 16)

@pytest.mark.parametrize('nw', NW)
def test_odd_file_names(vdls, root, video_folder, nw):
    d = root/f'names{nw}'/'a'; d.mkdir(parents=True)
    good = sorted(video_folder.glob('train/a/*.mp4'))[0]
    spaced, raw = d/'my clip (1).mp4', _bytes_path(d, b'clip_\xff\xfe caf\xe9.mp4')
    for p in (spaced, raw): shutil.copy(good, p)
    assert '\udcff' in str(raw)
    assert sorted(get_video_files(d.parent)) == sorted([spaced, raw])
    xs, = _batches(vdls, [spaced, raw], nw)[0]
    n = len(ImageSeq.create(good))
    assert xs.shape == (2, 8, 3, 16, 16) and all([frame_index(f) for f in x] == sample_indices(n, 8) for x in xs)
    broken = _bytes_path(d, b'broken \xff.mp4'); broken.write_bytes(b'\x00'*100)
    _raises(vdls, broken, nw, 'cannot open|not a video')

def test_empty_class_folder(video_folder, root):
    d = root/'empty_class'
    shutil.copytree(video_folder, d)
    for split in ('train', 'valid'): (d/split/'c').mkdir()
    dls = _video_dls(d)
    assert list(dls.vocab) == ['a', 'b'] and len(dls.train_ds) == 6 and len(dls.valid_ds) == 4
    assert dls.valid.one_batch()[0].shape == (2, 8, 3, 16, 16)
    with pytest.raises(SeqError, match=r"train/c: this frame folder holds no images"):  # an empty frame folder as a sequence is an error naming it
        LoadFrames(4)(d/'train'/'c')

def test_symlink_loop_terminates_without_duplicates(root, video_folder):
    d = root/'loop'
    shutil.copytree(video_folder/'train', d)
    os.symlink(d, d/'a'/'back_to_root')
    os.symlink('self', d/'b'/'self')  # a link to itself
    fs = get_video_files(d)
    assert len(fs) == len(set(map(os.path.realpath, fs))) == 6

def test_symlink_loop_in_frame_folder(root):
    d = root/'loopframes'/'seq'; d.mkdir(parents=True)
    for i,f in enumerate(make_frames(4)): Image.fromarray(f).save(d/f'{i}.png')
    os.symlink(d, d/'loop.png'); os.symlink('self.png', d/'self.png')
    assert [p.name for p in d.ls_sorted()] == ['0.png', '1.png', '2.png', '3.png']
    x = LoadFrames(4)(d)
    assert [frame_index(np.asarray(f)) for f in x] == [0, 1, 2, 3]

# ---- frame images ----
def _frame_dls(path, nw=0, cls=ImageSeq, item_tfms=None, **kw):
    dblock = DataBlock(blocks=(SeqBlock(cls, **kw), CategoryBlock), get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                       get_y=parent_label, splitter=GrandparentSplitter(), item_tfms=item_tfms)
    return dblock.dataloaders(path, bs=2, num_workers=nw)

@pytest.fixture(scope='module')
def fdls(frame_folder): return _frame_dls(frame_folder)

@pytest.fixture(scope='module')
def fdls_bw(frame_folder): return _frame_dls(frame_folder, cls=ImageSeqBW)

@pytest.fixture(scope='module')
def mixed_modes(root):
    "A frame folder of 32x48 frames in six PIL modes, and the RGB each should load as"
    d = root/'modes'; d.mkdir()
    rgb = make_frames(6, 32, 48)
    Image.fromarray(rgb[0]).save(d/'1.png')                              # RGB
    grey = rgb[1].mean(-1).round().astype(np.uint8)
    Image.fromarray(grey).save(d/'2.png')                                # L (grayscale among RGB frames)
    pal = np.array([[i, 255-i, (7*i) % 256] for i in range(256)], np.uint8)
    idx = (np.arange(32*48).reshape(32, 48) % 256).astype(np.uint8)
    p = Image.fromarray(idx, 'P'); p.putpalette(pal.reshape(-1).tolist()); p.save(d/'3.png')  # palette
    Image.fromarray(rgb[3]).convert('CMYK').save(d/'4.jpg', quality=100)  # CMYK JPEG
    g16 = (np.arange(32*48).reshape(32, 48) % 256).astype(np.uint16)*257
    Image.fromarray(g16).save(d/'5.png')                                 # 16-bit grey
    Image.fromarray(rgb[5]).convert('RGBA').save(d/'6.png')              # RGBA
    modes = [Image.open(d/f).mode for f in ('1.png', '2.png', '3.png', '4.jpg', '5.png', '6.png')]
    assert modes == ['RGB', 'L', 'P', 'CMYK', 'I;16', 'RGBA']
    g8 = (g16//257).astype(np.uint8)
    expected = [rgb[0], np.repeat(grey[..., None], 3, -1), pal[idx], rgb[3], np.repeat(g8[..., None], 3, -1), rgb[5]]
    return d, np.stack(expected)

@pytest.mark.parametrize('nw', NW)
def test_frame_modes_16bit_cmyk_palette_mixed(fdls, fdls_bw, mixed_modes, nw):
    d, expected = mixed_modes
    x, = _batches(fdls, [d], nw)[0]  # sampler 'uniform' with n_frames=None: all 6 frames
    got = (TensorBase(x[0])*255).round().byte().permute(0, 2, 3, 1).numpy()
    assert got.shape == (6, 32, 48, 3)
    for i in (0, 1, 2, 4, 5): assert np.array_equal(got[i], expected[i]), f'frame {i+1}'
    assert np.abs(got[3].astype(int) - expected[3]).max() <= 4  # CMYK JPEG: lossy, but not inverted or clipped
    xb, = _batches(fdls_bw, [d], nw)[0]  # the same folder as grayscale
    gb = (TensorBase(xb[0])*255).round().byte().numpy()
    assert gb.shape == (6, 1, 32, 48)
    assert np.array_equal(gb[1, 0], expected[1][..., 0]) and np.array_equal(gb[4, 0], expected[4][..., 0])

@pytest.mark.parametrize('nw', NW)
def test_non_numeric_and_odd_frame_names(fdls, root, nw):
    d = root/f'names_frames{nw}'
    names = [b'a.png', b'b2.png', b'b10.png', b'c \xff.png', b'cover.png']  # natural order; a non-UTF-8 name; no digits
    seq = _bytes_path(d, b'seq \xe9 1'); seq.mkdir(parents=True)
    for i,(n,f) in enumerate(zip(names, make_frames(5, 32, 48))): Image.fromarray(f).save(_bytes_path(seq, n))
    assert [os.fsencode(p.name) for p in seq.ls_sorted()] == names
    x, = _batches(fdls, [seq], nw)[0]
    assert [frame_index(f) for f in x[0]] == [0, 1, 2, 3, 4]
    _bytes_path(seq, b'b3 \xfe.png').write_bytes(b'not a png')  # a broken frame with an odd name is named
    msg = _raises(fdls, seq, nw, 'cannot read this frame image')
    assert os.fsdecode(b'b3 \xfe.png') in msg

@pytest.mark.parametrize('nw', NW)
def test_frames_of_two_sizes(frame_folder, fdls, root, nw):
    seq = root/f'twosizes{nw}'/'a'/'seq'; seq.mkdir(parents=True)
    for i,f in enumerate(make_frames(3, 32, 48)): Image.fromarray(f).save(seq/f'{i}.png')
    for i,f in enumerate(make_frames(6, 24, 24)[3:], 3): Image.fromarray(f).save(seq/f'{i}.png')
    msg = _raises(fdls, seq, nw, r'differ in size \(24x24, 48x32\).*Resize\(\.\.\.\)` to the DataBlock.s `item_tfms`')
    assert f'{seq}: the frames' in msg  # no Resize: the error names the folder
    x, = _batches(_frame_dls(frame_folder, item_tfms=Resize(16)), [seq], nw)[0]  # with Resize it works
    assert x.shape == (1, 6, 3, 16, 16) and [frame_index(f) for f in x[0]] == list(range(6))

@pytest.mark.parametrize('nw', NW)
def test_frames_of_two_sizes_skipped(frame_folder, root, nw):
    "Under on_error='skip' a folder of mixed frame sizes is replaced, its error logged: epochs complete, labels stay right"
    d = root/f'twosizes_skip{nw}'
    shutil.copytree(frame_folder, d)
    seq = d/'train'/'a'/'a_0'  # the first training item: `dataloaders` builds all the same
    for i,f in enumerate(make_frames(3, 24, 24), 1): Image.fromarray(f).save(seq/f'{i}.png')
    vseq = d/'valid'/'b'/'b_1'
    Image.fromarray(make_frames(1, 40, 40)[0]).save(vseq/'4.png')  # a sampled frame (n_frames=4 of 10: 1, 4, 7, 10)
    dls = _frame_dls(d, nw=nw, on_error='skip', n_frames=4)
    _loader(dls).skip_log.clear()
    for dl, bad, n in ((dls.valid, vseq, 4), (dls.train, seq, 6)):
        with pytest.warns(SkippedItemWarning) as w: bs = list(dl)
        assert [len(y) for _,y in bs] == [2]*(n//2) and all(x.shape[1:] == (4, 3, 32, 48) for x,_ in bs)
        assert [m for m in dl.skipped] == [f"{bad}: the frames of this sequence differ in size " + (
            "(24x24, 48x32): " if dl is dls.train else "(48x32, 40x40): ") + fsd._RESIZE + "."]
        summary = [str(o.message) for o in w if 'in this pass' in str(o.message)]
        assert len(summary) == 1 and summary[0].startswith(f'1 of {n} items') and str(bad) in summary[0]
        items = list(dl.items)
        repl = items[(items.index(bad)+1) % n]  # the broken item's replacement: the next item of the dataset
        assert sorted(dls.vocab[int(t)] for _,y in bs for t in y) == sorted([o.parent.name for o in items if o != bad] + [repl.parent.name])
    dls.train.shuffle = False
    x, y = dls.train.one_batch()  # the first item is replaced by the next loadable one, with its own label
    assert [dls.vocab[int(t)] for t in y] == ['a', 'a']

@pytest.mark.parametrize('nw', NW)
def test_frames_of_two_sizes_in_a_window(frame_folder, root, nw):
    "`SeqSplit` windows (lists of frame files): the error names the folder and the frames; 'skip' replaces the item"
    d = root/f'twosizes_win{nw}'
    shutil.copytree(frame_folder, d)
    seq = d/'valid'/'a'/'a_0'
    Image.fromarray(make_frames(1, 24, 24)[0]).save(seq/'2.png')
    split = SeqSplit(n_in=3, n_out=2)
    def dls(**kw):
        return DataBlock(blocks=(SeqBlock(**kw), SeqBlock(**kw)), get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                         get_x=split.get_x, get_y=split.get_y, splitter=GrandparentSplitter()).dataloaders(d, bs=2, num_workers=nw)
    with pytest.raises(SeqError) as e: list(dls().valid)
    assert f'{seq} (frames 1.png to 3.png): the frames of this sequence differ in size (24x24, 48x32)' in str(e.value)
    del e
    v = dls(on_error='skip').valid
    with pytest.warns(SkippedItemWarning): bs = list(v)
    assert [(x.shape, y.shape) for x,y in bs] == [((2, 3, 3, 32, 48), (2, 2, 3, 32, 48))]*2 and len(v.skipped) == 1

@pytest.mark.parametrize('nw', NW)
def test_huge_frame_images_refused_from_the_header(fdls, frame_folder, root, nw):
    d = root/f'huge{nw}'
    for name, (w,h), pat in (('bomb', (40000, 40000), r'too many pixels.*MAX_IMAGE_PIXELS'),  # above PIL's own bomb check
                             ('big', (9000, 9000), r'9000x9000 = 81,000,000 pixels.*max_pixels=67,108,864')):
        seq = d/name; seq.mkdir(parents=True)
        for i,f in enumerate(make_frames(2, 32, 48)): Image.fromarray(f).save(seq/f'{i}.png')
        write_png_header(seq/'2.png', w, h)
        msg = _raises(fdls, seq, nw, pat)
        assert '2.png' in msg
    small = _frame_dls(frame_folder)
    _loader(small).max_pixels = 1000  # configurable (`SeqBlock(max_pixels=...)`): 48x32 frames are now too big
    _raises(small, d/'big', nw, r'48x32 = 1,536 pixels.*max_pixels=1,000')

# ---- on_error='skip' ----
@pytest.fixture(scope='module')
def dirty(root, video_folder, bad_videos, short_video):
    "The fixture videos plus broken files in train and valid; the first training item (sorted) is broken"
    d = root/'dirty'
    shutil.copytree(video_folder, d)
    shutil.copy(bad_videos['zero'][0], d/'train'/'a'/'0_zero.mp4')
    shutil.copy(bad_videos['text'][0], d/'train'/'b'/'text.mp4')
    shutil.copy(bad_videos['sizes'][0], d/'train'/'b'/'sizes.mkv')
    shutil.copy(bad_videos['truncated'][0], d/'valid'/'a'/'truncated.mp4')
    shutil.copy(bad_videos['audio'][0], d/'valid'/'b'/'audio.mp4')
    shutil.copy(short_video, d/'valid'/'b'/'short.mp4')  # bad only under short='error'
    return d, {'train': {'0_zero.mp4', 'text.mp4', 'sizes.mkv'}, 'valid': {'truncated.mp4', 'audio.mp4', 'short.mp4'}}

def _cls_of(seq) -> str:
    "Class of a fixture video from its content: class a clips have 12, 15 or 18 frames, class b 13, 16 or 19"
    return 'a' if frame_index(seq[-1])+1 in (12, 15, 18) else 'b'

def _skipped_names(msgs): return {n for m in msgs for n in ('0_zero.mp4', 'text.mp4', 'sizes.mkv', 'truncated.mp4', 'audio.mp4', 'short.mp4') if n in m}

@pytest.mark.parametrize('nw', NW)
def test_skip_completes_epochs_and_reports(dirty, nw):
    d, bad = dirty
    dls = _video_dls(d, nw=nw, bs=3, on_error='skip', short='error')  # it builds: the first training item is broken
    assert len(dls.train_ds) == 9 and len(dls.valid_ds) == 7
    tfm = _loader(dls)
    tfm.skip_log.clear()
    for dl, split in ((dls.valid, 'valid'), (dls.train, 'train')):
        with pytest.warns(SkippedItemWarning) as w: bs = list(dl)
        assert len(bs) == len(dl)  # broken items are replaced, not dropped: every batch is there and full
        assert all(len(y) == 3 for _,y in bs[:-1]) and sum(len(y) for _,y in bs) == len(dl.dataset)
        for x,y in bs:  # each replacement brings its own label
            assert all(_cls_of(s) == dls.vocab[int(t)] for s,t in zip(x, y))
        summary = [str(o.message) for o in w if 'in this pass' in str(o.message)]
        assert len(summary) == 1
        assert summary[0].startswith(f'3 of {len(dl.dataset)} items') and _skipped_names(dl.skipped) == bad[split]
        assert len(dl.skipped) == 3
    assert tfm.n_skipped >= 6 and _skipped_names(tfm.skipped) == bad['valid'] | bad['train']  # counted in the main process

def test_skip_in_training(dirty):
    d, bad = dirty
    set_seed(0)
    dls = _video_dls(d, bs=3, on_error='skip', short='error')
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(8*3*16*16, 2)), loss_func=CrossEntropyLossFlat())
    with pytest.warns(SkippedItemWarning, match='could not be loaded'): learn.fit(2, 1e-3)
    assert len(learn.recorder.values) == 2 and all(np.isfinite(v).all() for v in learn.recorder.values)

@pytest.mark.parametrize('nw', NW)
def test_skip_everything_broken_is_an_error(dirty, bad_videos, nw):
    dls = _video_dls(dirty[0], on_error='skip', short='error')
    items = [bad_videos[k][0] for k in ('zero', 'text', 'audio')]
    with pytest.raises(SeqError, match=r'None of the 3 items.*could be loaded'): _batches(dls, items, nw)

def test_skip_with_a_plain_fastai_loader_drops_items(dirty, bad_videos, video_folder):
    "Outside `SeqDL` (e.g. `Datasets` built by hand) a skipped item is a fastai `SkipItemException`: the loader drops it"
    from fastai.data.core import Datasets, TfmdDL
    from fastai.data.transforms import Categorize
    good = sorted(video_folder.glob('valid/*/*.mp4'))
    items = [good[0], bad_videos['zero'][0], good[1], bad_videos['audio'][0], good[2]]
    lf = LoadFrames(8, on_error='skip')
    ds = Datasets(items, tfms=[[lf], [parent_label, Categorize()]])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        bs = list(TfmdDL(ds, bs=2, after_item=[Resize(16), ToTensor(), StackFrames()], num_workers=0))
    assert [len(b[1]) for b in bs] == [2, 1] and lf.n_skipped == 2
    with pytest.raises(SkippedItem, match='zero.mp4'): lf(bad_videos['zero'][0])

def test_on_error_is_checked():
    with pytest.raises(ValueError, match='on_error'): VideoBlock(on_error='ignore')

# ---- videos_to_frames: no case loses data ----
@pytest.mark.parametrize('nw', NW)
def test_videos_to_frames_keeps_good_work(root, video_folder, bad_videos, nw):
    src, dest = root/f'v2f_src{nw}', root/f'v2f_dest{nw}'
    shutil.copytree(video_folder/'train', src)
    for k in ('zero', 'text', 'audio'): shutil.copy(bad_videos[k][0], src/'a'/bad_videos[k][0].name)
    with pytest.warns(UserWarning, match=r'3 of 9 videos could not be converted') as w:
        outs = videos_to_frames(src, dest, n_workers=nw, progress=False)
    msg = next(str(o.message) for o in w if 'could not be converted' in str(o.message))
    assert all(n in msg for n in ('zero.mp4', 'text.mp4', 'audio.mp4'))
    goods = sorted(src.glob('*/*_*.mp4'))
    assert len(goods) == 6 and sorted(outs) == sorted(dest/v.parent.name/v.stem for v in goods)
    for v in goods:
        frames = (dest/v.parent.name/v.stem).ls_sorted()
        assert len(frames) == len(ImageSeq.create(v)) and [frame_index(np.asarray(Image.open(f))) for f in frames[:3]] == [0, 1, 2]
    assert not any((dest/'a'/n).exists() for n in ('zero', 'text', 'audio'))  # no half-written folders
    mtimes = {f: f.stat().st_mtime_ns for f in dest.rglob('*') if f.is_file()}
    with pytest.warns(UserWarning, match=r'3 of 9 videos'):  # a re-run retries the bad ones only
        outs2 = videos_to_frames(src, dest, n_workers=nw, progress=False)
    assert sorted(outs2) == sorted(outs)
    assert {f: f.stat().st_mtime_ns for f in dest.rglob('*') if f.is_file()} == mtimes
    v = goods[0]; out = dest/v.parent.name/v.stem
    shutil.rmtree(out)  # on_error='raise': the error comes after the good videos are done
    with pytest.raises(VideoError, match='3 of 9 videos'): videos_to_frames(src, dest, n_workers=nw, on_error='raise', progress=False)
    assert len(out.ls_sorted()) == len(ImageSeq.create(v))
