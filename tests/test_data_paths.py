"Every path to a clip decodes it the same (loaders, `test_dl`, `predict`, export/`load_learner`); a broken first item under 'skip'"
import pickle, warnings
import numpy as np, pytest, torch
from torch import nn
from PIL import Image
from fastai.vision.all import (DataBlock, CategoryBlock, parent_label, IndexSplitter, GrandparentSplitter, Resize, Learner,
                               CrossEntropyLossFlat, load_learner, TfmdDL)
import fastai_seq.data as fsd
from fastai_seq.core import ImageTuple, SeqError
from fastai_seq.data import VideoBlock, SeqBlock, LoadFrames, SeqDL, SkippedItemWarning, find_load_frames, leading_resize
from fastai_seq.video import get_video_files
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `Path.ls_sorted`, `learn.predict` with paths, ...)
from conftest import make_frames
from test_video import write_video

class KeepInput(nn.Module):
    "A tiny classifier that keeps the last batch it was given"
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
    def forward(self, x):
        self.seen = x.detach().clone()
        return self.lin(x.float().mean((1, 3, 4)))

def _eq(a, b): return torch.equal(torch.as_tensor(a).as_subclass(torch.Tensor), torch.as_tensor(b).as_subclass(torch.Tensor))

@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp('paths')
    for c in ('c0', 'c1'): (d/c).mkdir()
    for i in range(4): write_video(d/f'c{i%2}'/f'{i}.mp4', n=12, w=64, h=48, opts={'g': '4'})
    return d

def _dls(path, **kw):
    return DataBlock(blocks=(VideoBlock(n_frames=4, **kw), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=IndexSplitter([0, 2]), item_tfms=Resize((24, 40))).dataloaders(path, bs=2, num_workers=0)

def test_every_path_decodes_the_same(videos, tmp_path):
    "The leading `Resize` is recorded on `LoadFrames` once, when the loader is set up: any loader decodes the same frames"
    assert not hasattr(fsd, '_DECODER_RESIZE')  # no per-loader context: the transform's output is its own
    dls = _dls(videos)
    lf, = find_load_frames(dls.train)
    assert find_load_frames(dls.valid) == find_load_frames(dls.valid_ds) == find_load_frames(dls.train_ds, 0) == [lf]
    assert find_load_frames(dls.train_ds, 1) == []  # the labels' `TfmdLists`
    assert lf.item_resize == leading_resize(dls.train) == leading_resize(dls.valid) == ((24, 40), 'crop', 'reflection')
    assert isinstance(dls.valid, SeqDL) and dls.valid_ds[0][0].size == (40, 24)  # indexing the dataset: the decoder's size too
    ref = _dls(videos, decoder_resize=False)  # fastai's `Resize` on full-size frames: same shapes, other pixels
    files = list(dls.valid.items)
    xv = dls.valid.one_batch()[0]
    assert xv.shape == (2, 4, 3, 24, 40) and not _eq(xv, ref.valid.one_batch()[0])
    assert _eq(dls.test_dl(files).one_batch()[0], xv)
    plain = TfmdDL(dls.valid_ds, bs=2, after_item=list(dls.valid.after_item.fs), after_batch=list(dls.valid.after_batch.fs),
                   num_workers=0)
    assert _eq(plain.one_batch()[0], xv)  # a plain fastai loader, not a `SeqDL`
    learn = Learner(dls, KeepInput(), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    for i, fn in enumerate(files):
        learn.predict(fn)
        assert _eq(learn.model.seen, xv[i:i+1]), fn
    del learn.model.seen
    learn.export('export.pkl')
    learn2 = load_learner(tmp_path/'export.pkl')
    assert find_load_frames(learn2.dls.valid)[0].item_resize == ((24, 40), 'crop', 'reflection')  # pickled with the learner
    for i, fn in enumerate(files):
        learn2.predict(fn)
        assert _eq(learn2.model.seen, xv[i:i+1]), fn

def test_find_load_frames_of_a_tfmdlists(videos):
    from fastai.data.core import TfmdLists
    lf = LoadFrames(2)
    tl = TfmdLists(get_video_files(videos)[:2], [lf])
    assert find_load_frames(tl) == find_load_frames(tl, 0) == [lf] and find_load_frames([1, 2]) == []

# ---- a broken first training item under on_error='skip': replaced by the next loadable one, as in a batch
def _folders(root, broken=('a0',)):
    "Frame folders train/{a,b}/..., valid/{a,b}/...; the `broken` ones hold no images"
    for split, names in (('train', ('a0', 'a1', 'b2')), ('valid', ('a3', 'b4'))):
        for nm in names:
            d = root/split/nm[0]/nm
            d.mkdir(parents=True)
            if nm in broken: continue
            for i, f in enumerate(make_frames(3, 16, 16, seed=int(nm[1]))): Image.fromarray(f).save(d/f'{i}.png')
    return root

def _frame_dls(root, **kw):
    return DataBlock(blocks=(SeqBlock(n_frames=2, **kw), CategoryBlock),
                     get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                     get_y=lambda o: o.parent.name, splitter=GrandparentSplitter()).dataloaders(root, bs=2, num_workers=0)

def test_broken_first_item_skipped_when_building(tmp_path):
    root = _folders(tmp_path)
    with pytest.warns(SkippedItemWarning, match=r'skipping .*a0: this frame folder holds no images') as w:
        dls = _frame_dls(root, on_error='skip')
    lf, = find_load_frames(dls.train)
    assert lf.skipped and all('a0' in m for m in lf.skipped)  # (`dataloaders` loads the first item again, through the loader)
    assert dls.train_ds.tls[0].types[-1] is ImageTuple  # the output type, learnt from the next training item
    assert lf._probe is None  # what `setups` kept for the probe is dropped after it, and never pickled:
    lf._probe = (['kept'], [])
    assert pickle.loads(pickle.dumps(lf))._probe is None
    lf._probe = None
    with pytest.warns(SkippedItemWarning): x, y = dls.train.new(shuffle=False).one_batch()
    assert x.shape == (2, 2, 3, 16, 16) and [dls.vocab[int(t)] for t in y] == ['a', 'a']  # a0 replaced by a1, its own label
    with pytest.raises(SeqError, match=r'a0: this frame folder holds no images'): _frame_dls(root)  # 'raise': the error

def test_all_training_items_broken_is_an_error(tmp_path):
    root = _folders(tmp_path, broken=('a0', 'a1', 'b2'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedItemWarning)
        with pytest.raises(SeqError, match=r"None of the 3 training items.*could be loaded.*a0: this frame folder holds no images"):
            _frame_dls(root, on_error='skip')

def test_one_broken_training_item_is_an_error(tmp_path):
    "A training set of one broken item under 'skip': nothing to learn the output type from, an error naming it"
    root = tmp_path
    for split, nm in (('train', 'a0'), ('valid', 'b1')):
        d = root/split/nm[0]/nm; d.mkdir(parents=True)
        if split=='valid':
            for i, f in enumerate(make_frames(3, 16, 16)): Image.fromarray(f).save(d/f'{i}.png')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedItemWarning)
        with pytest.raises(SeqError, match=r"None of the 1 training items.*a0: this frame folder holds no images"):
            _frame_dls(root, on_error='skip')
