"""``python -m nnx`` is the ``nnx`` command."""
import sys

from .cli import main

sys.exit(main())
