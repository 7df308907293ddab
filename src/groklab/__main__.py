"""`python -m groklab …`: the `groklab` command."""
import sys

from groklab.cli import main

sys.exit(main())
