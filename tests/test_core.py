import numpy as np, torch, pytest
from pathlib import Path
from PIL import Image
import matplotlib.pyplot as plt
from fastai.vision.all import PILImage, TensorImage
from fastai_seq.core import *
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `Path.ls_sorted`, `learn.predict` with paths, ...)
from conftest import make_frames, frame_index, write_video

def _touch(d:Path, names):
    d.mkdir(parents=True, exist_ok=True)
    for n in names: (d/n).write_bytes(b'')
    return d

@pytest.mark.parametrize('names,expected', [
    ([f'{i}.jpg' for i in (12, 0, 3, 1, 10, 2)], [f'{i}.jpg' for i in (0, 1, 2, 3, 10, 12)]),
    ([f'img_{i:05d}.jpg' for i in (11, 2, 1)], [f'img_{i:05d}.jpg' for i in (1, 2, 11)]),
    (['frame-10.png', 'frame-2.png', 'frame-1.png'], ['frame-1.png', 'frame-2.png', 'frame-10.png']),
    (['0010.png', '0001.png', '0002.png'], ['0001.png', '0002.png', '0010.png']),
    (['b.jpg', 'a10.jpg', 'a2.jpg', '3.jpg', 'A1.jpg', 'x_1_2.png', 'x_1_10.png', 'cover.jpg'],
     ['3.jpg', 'A1.jpg', 'a2.jpg', 'a10.jpg', 'b.jpg', 'cover.jpg', 'x_1_2.png', 'x_1_10.png']),
])
def test_ls_sorted_natural_order(tmp_path, names, expected):
    assert [p.name for p in _touch(tmp_path/'d', names).ls_sorted()] == expected

def test_ls_sorted_filters(tmp_path):
    d = _touch(tmp_path/'d', ['2.jpg', '1.PNG', 'notes.txt', '.DS_Store'])
    (d/'sub').mkdir()
    assert [p.name for p in d.ls_sorted()] == ['1.PNG', '2.jpg', 'notes.txt']
    assert [p.name for p in d.ls_sorted(extensions=['.jpg', '.png'])] == ['1.PNG', '2.jpg']
    with pytest.raises(SeqError, match='not a folder'): (d/'2.jpg').ls_sorted()

def test_natural_key_never_mixes_types():
    names = ['1', 'a', '1a', 'a1', '', '10', 'a1b2', 'a1bb', '2_', '_2']
    assert sorted(names, key=natural_key)[:3] == ['', '1', '1a']

@pytest.mark.parametrize('shape,perm', [((5,16,20), None), ((5,3,16,20), None), ((5,16,20,3), (0,3,1,2)), ((5,1,16,20), None)])
def test_imageseq_create_arrays(shape, perm):
    a = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    for x in (a, torch.from_numpy(a)):
        s = ImageSeq.create(x)
        assert isinstance(s, ImageSeq) and isinstance(s, TensorImage) and s.dtype==torch.uint8
        ref = torch.from_numpy(a)
        ref = ref[:,None] if ref.ndim==3 else ref.permute(*perm) if perm else ref
        assert torch.equal(torch.as_tensor(s), ref)

def test_imageseq_create_lists_and_folder(tmp_path):
    frames = make_frames(6)
    for i,f in enumerate(frames): Image.fromarray(f).save(tmp_path/f'{i+1}.png')  # natural order 1..6; '10' would sort last
    ref = torch.from_numpy(frames).permute(0,3,1,2)
    from_folder = ImageSeq.create(tmp_path)
    from_paths = ImageSeq.create([tmp_path/f'{i+1}.png' for i in range(6)])
    from_pils = ImageSeq.create([PILImage.create(f) for f in frames])
    from_tensors = ImageSeq.create([torch.from_numpy(f).permute(2,0,1) for f in frames])
    for s in (from_folder, from_paths, from_pils, from_tensors):
        assert isinstance(s, ImageSeq) and s.shape==(6,3,32,48)
        assert torch.equal(torch.as_tensor(s), ref)
    assert [frame_index(f) for f in from_folder] == list(range(6))

def test_imageseq_create_video(tmp_path):
    frames = make_frames(9)
    fn = write_video(tmp_path/'v.mp4', frames)
    s = ImageSeq.create(fn)
    assert isinstance(s, ImageSeq) and s.shape==(9,3,32,48)
    assert [frame_index(f) for f in s] == list(range(9))
    assert (torch.as_tensor(s).float()-torch.from_numpy(frames).permute(0,3,1,2).float()).abs().mean() < 3

def test_imageseq_create_errors(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(SeqError, match='empty'): ImageSeq.create(tmp_path/'empty')
    with pytest.raises(SeqError, match='no such'): ImageSeq.create(tmp_path/'missing')
    with pytest.raises(SeqError, match='different shapes'): ImageSeq.create([torch.zeros(3,4,4), torch.zeros(3,5,5)])
    (tmp_path/'bad').mkdir(); (tmp_path/'bad'/'1.png').write_bytes(b'not an image')
    with pytest.raises(SeqError, match=r'1\.png'): ImageSeq.create(tmp_path/'bad')
    with pytest.raises(SeqError): ImageSeq.create(np.zeros((4,5,6,7)))

def test_batch_keeps_type():
    s = ImageSeq.create(torch.rand(4,3,8,8))
    b = torch.stack([s, s])
    assert isinstance(b, ImageSeq) and b.shape==(2,4,3,8,8)
    assert isinstance(b.float()/2, ImageSeq)

def test_frames_strip_and_show():
    frames = torch.from_numpy(make_frames(12)).permute(0,3,1,2)
    strip = frames_strip(frames, max_frames=4, gap=2)
    assert strip.shape == (32, 4*48+3*2, 3) and strip.dtype==np.uint8
    # evenly spaced frames 0, 4, 7, 11 (rounded linspace), left to right
    idxs = [frame_index(strip[:, i*50:i*50+48]) for i in range(4)]
    assert idxs == [0, 4, 7, 11]
    assert (strip[:, 48:50]==255).all()
    s = ImageSeq(frames)
    ax = s.show(max_frames=4)
    assert ax.images[0].get_array().shape[:2] == (32, 4*48+3*2)
    ax = ImageSeq.create(torch.rand(3,1,8,8)).show()  # grayscale float
    assert ax.images[0].get_cmap().name == 'gray'

def test_to_uint8_hwc():
    "One frame to uint8 (H,W,C), one function for strips, GIFs and list-of-frames loading; `keep_channel=False` for PIL"
    from fastai_seq.core import to_uint8_hwc
    rgb = make_frames(1)[0]                                           # (32,48,3) uint8
    chw = torch.from_numpy(rgb).permute(2,0,1)
    for img in (rgb, chw, chw.float()/255, rgb.transpose(2,0,1), rgb/255., Image.fromarray(rgb), chw.double()/255):
        a = to_uint8_hwc(img)
        assert a.dtype==np.uint8 and a.shape==(32, 48, 3) and np.array_equal(a, rgb), type(img)
    grey = rgb[..., 0]
    for img in (grey, grey[None], torch.from_numpy(grey)[None], Image.fromarray(grey), grey[..., None]):
        assert to_uint8_hwc(img).shape==(32, 48, 1) and to_uint8_hwc(img, keep_channel=False).shape==(32, 48), type(img)
        assert np.array_equal(to_uint8_hwc(img, keep_channel=False), grey)
    assert to_uint8_hwc(torch.tensor([[[-0.5, 0.5, 2.]]])).ravel().tolist() == [0, 128, 255]   # floats clipped to [0,1]
    assert to_uint8_hwc(np.array([[-3, 7, 300]])).ravel().tolist() == [0, 7, 255]            # ints clipped to [0,255]
    assert to_uint8_hwc(torch.rand(3, 4, 5, dtype=torch.bfloat16)).shape == (4, 5, 3)
    assert to_uint8_hwc(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 4)  # RGBA (H,W,4) stays as it is

def test_imagetuple():
    frames = [PILImage.create(f) for f in make_frames(5)]
    t = ImageTuple.create(frames)
    assert t.size == (48, 32)
    ax = t.show(max_frames=3)
    assert ax.images[0].get_array().shape[:2] == (32, 3*48+2*2)

def test_gif_round_trip(tmp_path):
    frames = make_frames(7)
    s = ImageSeq(torch.from_numpy(frames).permute(0,3,1,2))
    fn = s.to_gif(tmp_path/'a.gif', fps=10)
    img = Image.open(fn)
    assert img.n_frames == 7 and img.info['duration'] == 100
    got = []
    for i in range(img.n_frames):
        img.seek(i); got.append(frame_index(np.asarray(img.convert('RGB'))))
    assert got == list(range(7))
    fn2 = save_gif(torch.rand(3,1,8,8), tmp_path/'b.gif', scale=2)
    assert Image.open(fn2).size == (16, 16)

def test_imageseq_create_cl_type(tmp_path):
    "The fastai tutorial's `ImageSeq.create(x, TensorImageBW)`: the frame type, positional or keyword, is honoured"
    from fastai.torch_core import TensorImageBW
    from fastai.vision.core import PILImageBW
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    for s in (ImageSeq.create(x, TensorImageBW), ImageSeq.create(x, cl_type=TensorImageBW), ImageSeq.create(x[:, 0], PILImageBW)):
        assert type(s) is ImageSeqBW and s.shape == (3, 1, 8, 8) and torch.equal(torch.as_tensor(s), x)
    assert type(ImageSeq.create(x, TensorImage)) is ImageSeq and type(ImageSeq.create(x)) is ImageSeq
    ax = ImageSeq.create(x, TensorImageBW).show()
    assert ax.images[0].get_cmap().name == 'gray'
    assert (ax.images[0].get_array()[:, :8] == x[0, 0].numpy()).all()   # the pixels of frame 0, unchanged
    # a batch of them keeps the type (what `show_batch` dispatches on)
    assert type(torch.stack([ImageSeq.create(x, TensorImageBW)]*2)) is ImageSeqBW
    # frame files read as grey with a grey frame type
    d = tmp_path/'f'; d.mkdir()
    for i in range(2): Image.fromarray(np.full((6, 6, 3), 40*i, np.uint8)).save(d/f'{i}.png')
    s = ImageSeq.create(d, TensorImageBW)
    assert type(s) is ImageSeqBW and s.shape == (2, 1, 6, 6) and s[1].float().mean() == 40
    with pytest.raises(TypeError, match='frame type'): ImageSeq.create(x, 'gray')
    plt.close('all')
