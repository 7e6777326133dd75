"""Checkers for the notebooks' exercises, one module per chapter (``ch0``, ``ch1``, ...).

Each ``check_*`` function takes the learner's function, runs it on inputs with known answers, prints
one line (a tick, what is wrong, or "not attempted yet") and returns True or False. It never raises,
so a notebook with unfinished exercises still runs top to bottom. Notebooks call them as
``exercises.check_euler_solve(...)``: every checker is available from this package directly.
"""
from .ch0 import *  # noqa: F401,F403
from .ch0 import __all__ as _ch0
from .ch1 import *  # noqa: F401,F403
from .ch1 import __all__ as _ch1
from .ch2 import *  # noqa: F401,F403
from .ch2 import __all__ as _ch2
from .ch3 import *  # noqa: F401,F403
from .ch3 import __all__ as _ch3
from .ch4 import *  # noqa: F401,F403
from .ch4 import __all__ as _ch4
from .ch5 import *  # noqa: F401,F403
from .ch5 import __all__ as _ch5

__all__ = [*_ch0, *_ch1, *_ch2, *_ch3, *_ch4, *_ch5]
