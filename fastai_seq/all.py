"The one import users write: `from fastai_seq.all import *` (after `from fastai.vision.all import *`)"
from .core import *
from .precision import *
from .distributed import *
from .video import *
from .files import *
from .data import *
from .annotations import *
from .datasets import *
from .layers import *
from .metrics import *
from .losses import *
from .callbacks import *
from .registry import *
from .models import *
from .learner import *
from .evaluate import *
from .tracking import *
from . import fastai_patches  # the one line that changes fastai: every change is listed in `fastai_patches.CHANGES`
