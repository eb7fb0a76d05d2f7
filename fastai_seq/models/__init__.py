"Bundled model families; importing this module registers their archs"
from .convrnn import *
from .unet import *
from .phydnet import *
from .simvp import *
from .seq2seq import *
from .classify import *
from .kinetics import *
from .hf import ClipSpec   # the Hugging Face family registers itself on import; its helpers stay in `models.hf`
