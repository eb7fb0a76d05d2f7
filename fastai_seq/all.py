from .core import *
from .layers import *
from .registry import *
