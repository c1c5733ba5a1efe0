"""How the memory tests measure a peak: ``tracemalloc`` sees every NumPy array allocation."""
from __future__ import annotations

import tracemalloc


def traced_peak(action) -> int:
    """Bytes allocated at the peak of ``action()`` beyond what existed before it."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
