"A file with two video streams: the one FFmpeg picks by default (`av_find_best_stream`, as players do), any one by `stream=`"
import av, numpy as np, pytest
from pathlib import Path
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, GrandparentSplitter
from conftest import make_frames, frame_index
from fastai_seq.video import video_info, read_frames, VideoError
from fastai_seq.data import VideoBlock, sample_indices

SIZES = ((64, 48), (96, 72))  # (w,h) of streams 0 and 1: stream 1, at twice the bit rate, is the one FFmpeg picks

def write_two_streams(fn, n=20):
    "An MP4 with two H.264 video streams of the same frames (a 64x48 crop and the whole 96x72 frame), both marked default"
    fn = Path(fn); fn.parent.mkdir(parents=True, exist_ok=True)
    frames = make_frames(n, h=72, w=96)
    with av.open(str(fn), 'w') as c:
        ss = []
        for w, h in SIZES:
            s = c.add_stream('libx264', rate=10)
            s.width, s.height, s.pix_fmt, s.options = w, h, 'yuv420p', {'crf': '1', 'g': '6'}
            s.disposition = av.stream.Disposition.default  # two renditions: FFmpeg then picks by frames analysed, bit rate
            ss.append(s)
        for f in frames:
            for s in ss:
                img = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:s.height, :s.width]), format='rgb24')
                for p in s.encode(img): c.mux(p)
        for s in ss:
            for p in s.encode(): c.mux(p)
    return fn

def full_decode(fn, stream:int) -> np.ndarray:
    "Every frame of video stream `stream` of `fn`, by a plain PyAV decode: the reference"
    with av.open(str(fn)) as c: return np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=stream)])

@pytest.fixture(scope='module')
def two(tmp_path_factory): return write_two_streams(tmp_path_factory.mktemp('two')/'two.mp4')

def test_default_is_ffmpegs_pick(two):
    with av.open(str(two)) as c: best = list(c.streams.video).index(c.streams.best('video'))
    assert best == 1  # not stream 0: what `read_frames` read before
    inf = video_info(two)
    assert (inf.width, inf.height, inf.n_frames) == (*SIZES[1], 20)
    a = read_frames(two, [0, 7, 19])
    assert a.shape == (3, 72, 96, 3) and (a == full_decode(two, 1)[[0, 7, 19]]).all()

@pytest.mark.parametrize('stream', [0, 1])
def test_each_stream_exactly(two, stream):
    ref = full_decode(two, stream)
    w, h = SIZES[stream]
    assert video_info(two, stream=stream)[:1] + video_info(two, stream=stream)[2:4] == (20, w, h)
    assert (read_frames(two, stream=stream) == ref).all()
    idxs = [13, 2, 2, 19]
    assert (read_frames(two, idxs, stream=stream) == ref[idxs]).all()
    assert [frame_index(f) for f in read_frames(two, idxs, stream=stream)] == idxs

def test_a_stream_the_file_lacks(two):
    with pytest.raises(VideoError, match=r"two\.mp4: it has no video stream 2: it has 2 \(64x48, 96x72\).*stream="):
        read_frames(two, [0], stream=2)
    with pytest.raises(VideoError, match="no video stream 'x'"): video_info(two, stream='x')

def _grand(o): return Path(o).parent.parent.name == 'valid'

@pytest.mark.parametrize('stream,nw', [(None, 0), (0, 0), pytest.param(0, 2, marks=pytest.mark.workers)])
def test_videoblock_stream(tmp_path, stream, nw):
    "`VideoBlock(stream=)` reaches the decoder, in the main process and in workers"
    for split in ('train', 'valid'):
        for c in ('a', 'b'): write_two_streams(tmp_path/split/c/f'{c}.mp4')
    dblock = DataBlock(blocks=(VideoBlock(n_frames=4, stream=stream), CategoryBlock),
                       get_items=lambda p: sorted(p.rglob('*.mp4')), get_y=parent_label, splitter=GrandparentSplitter())
    dls = dblock.dataloaders(tmp_path, bs=2, num_workers=nw)
    x, _ = next(iter(dls.valid))
    w, h = SIZES[1 if stream is None else stream]
    assert x.shape == (2, 4, 3, h, w)
    assert [frame_index(f) for f in x[0]] == list(sample_indices(20, 4, 'uniform'))
