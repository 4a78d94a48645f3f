import sys

from autosam.cli import main

sys.exit(main())
