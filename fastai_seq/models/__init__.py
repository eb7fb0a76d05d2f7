"""Bundled model families; importing this package registers their archs

Archs are reached by name (`seq_learner(dls, 'convgru')`, `arch_info('r3d_18').builder`), so `from fastai_seq.models import *`
(and so `fastai_seq.all`) exports no model name: each class, builder, splitter and helper is imported from its family's
module, e.g. `from fastai_seq.models.convrnn import ConvGRUNet`. The names of `__all__` of each module stay readable here
too (`fastai_seq.models.ConvGRUNet`), as before."""
from .pretrained import *
from .convrnn import *
from .unet import *
from .phydnet import *
from .simvp import *
from .seq2seq import *
from .classify import *
from .kinetics import *
from .hf import *   # the Hugging Face family ('hf-hub:REPO_ID') registers itself on import

__all__ = []
