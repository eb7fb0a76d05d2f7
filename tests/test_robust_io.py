"Robust I/O: a user's own `Path.ls_sorted` patch, frame folders of mixed sizes, truncated/foreign rar archives, `videos_to_frames` workers outliving their parent"
import os, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from fastcore.basics import patch
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize
from fastai_seq.core import ImageSeq, SeqError, ls_sorted
from fastai_seq.data import SeqBlock, SkippedItemWarning
from conftest import make_frames, frame_index, write_video, REPO

# ---- the UCF101 tutorial's own `Path.ls_sorted` ----
@pytest.fixture
def tutorial_ls_sorted():
    "The UCF101 tutorial's `@patch def ls_sorted(self)` cell, applied as a user keeps it; the library's method restored after"
    orig = Path.__dict__['ls_sorted']
    try:
        @patch
        def ls_sorted(self:Path):
            "ls but sorts files by name numerically"
            return self.ls().sorted(key=lambda f: int(f.with_suffix('').name))
        assert Path.ls_sorted is not orig
        yield
    finally: Path.ls_sorted = orig

def _frame_block(**kw):
    return DataBlock(blocks=(SeqBlock(**kw), CategoryBlock), get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                     get_y=parent_label, splitter=GrandparentSplitter())

def test_user_ls_sorted_patch_does_not_break_the_library(frame_folder, tutorial_ls_sorted):
    d = frame_folder/'train'/'a'/'a_0'
    with pytest.raises(TypeError): d.ls_sorted(extensions=['.png'])  # the user's patch is in force
    dls = _frame_block(n_frames=4).dataloaders(frame_folder, bs=2, num_workers=0)
    x, y = dls.valid.one_batch()
    assert x.shape == (2, 4, 3, 32, 48) and [frame_index(f) for f in x[0]] == [0, 3, 6, 9]  # natural order: 1.png ... 10.png
    assert [frame_index(f) for f in ImageSeq.create(d)] == list(range(10))
    assert [p.name for p in ls_sorted(d, extensions='.png')][:3] == ['1.png', '2.png', '3.png']

def test_ls_sorted_function_and_method_agree(tmp_path):
    for n in ('10.jpg', '2.jpg', 'img_1.jpg', 'notes.txt', '.hidden.jpg'): (tmp_path/n).touch()
    assert [p.name for p in ls_sorted(tmp_path)] == [p.name for p in tmp_path.ls_sorted()] == ['2.jpg', '10.jpg', 'img_1.jpg', 'notes.txt']
    assert [p.name for p in ls_sorted(str(tmp_path), extensions=['.JPG'], hidden=True)] == ['2.jpg', '10.jpg', '.hidden.jpg', 'img_1.jpg']
    with pytest.raises(SeqError, match='not a folder'): ls_sorted(tmp_path/'2.jpg')
