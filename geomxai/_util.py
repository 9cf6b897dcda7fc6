"""Former home of the shared leaf helpers, kept while importers move (to be removed).

The helpers now live by purpose: :mod:`geomxai._hints` (close-name hints), :mod:`geomxai._fs`
(atomic writes, stale temporary files, path checks), :mod:`geomxai._lock` (the folder lock).
"""

from geomxai._fs import *  # noqa: F403
from geomxai._fs import (  # noqa: F401
    STALE_AFTER_S,
    _host_tag,
    _new_temp,
    _renameat2,
)
from geomxai._hints import close_matches, did_you_mean  # noqa: F401
from geomxai._lock import DirectoryLock, DirectoryLockedError  # noqa: F401
